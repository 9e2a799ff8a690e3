"""The summary of a study, made from its storage alone: every trial, best first, as
OUT/tune.md (the best ones), OUT/tune.csv and OUT/tune.json (all of them), and the figure
OUT/tune.png (:mod:`pyro_vae.tune.figure`). Each worker writes it when it finishes (under the
workers' lock, so the last one to finish leaves the whole study); ``pyro-vae tune
--summary-only`` writes it again."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..studies.tables import Column, markdown_table
from ..training.atomic_files import write_json, write_text
from .figure import draw_study
from .storage import out_lock, shown_url

if TYPE_CHECKING:
    from .worker import TuneSettings

TABLE = "tune"  # OUT/tune.md, tune.csv, tune.json, tune.png
SHOWN = 20  # trials in the Markdown table (all of them are in the CSV and JSON)
ORDER = ("complete", "pruned", "running", "waiting", "fail")


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, state, value (the mean of its replicates), their standard
    deviation, the setting (choices by their labels), the run directory; complete trials best
    first, then pruned, running and failed ones by number."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        state = t.state.name.lower()
        rows.append(
            {
                "trial": t.number,
                "state": state,
                "value": t.value if state == "complete" else None,
                "sd": attrs.get("value_sd"),
                "runs": len(attrs.get("values", [])),
                "params": dict(t.params),
                "pruned_at_epoch": attrs.get("pruned_at_epoch"),
                "error": attrs.get("error"),
                "run_dir": attrs.get("run_dir"),
            }
        )
    sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0

    def key(row: dict[str, Any]) -> tuple:
        best = sign * row["value"] if row["value"] is not None else math.inf
        return (ORDER.index(row["state"]), best, row["trial"])

    return sorted(rows, key=key)


def value_cell(row: dict[str, Any]) -> str:
    """'348.70 ± 12.31' (mean ± sd of the replicates), '348.70' for one, '—' for none."""
    if row["value"] is None:
        return "—"
    return f"{row['value']:.2f}" + (f" ± {row['sd']:.2f}" if row["sd"] is not None else "")


def state_cell(row: dict[str, Any]) -> str:
    if row["pruned_at_epoch"] is not None and row["state"] == "pruned":
        return f"pruned at epoch {row['pruned_at_epoch']}"
    return row["state"]


def param_cell(value: Any) -> str:
    """A searched option's value: a real number to 4 significant digits."""
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def columns(names: list[str], objective: str) -> list[Column]:
    shown: list[Column] = [("trial", "trial", ""), ("value", objective, lambda r: value_cell(r))]
    shown.append(("state", "state", lambda r: state_cell(r)))
    shown += [(n, n, lambda r, n=n: param_cell(r["params"].get(n))) for n in names]
    return [*shown, ("run_dir", "run directory", lambda r: f"`{r['run_dir'] or '—'}`")]


def csv_text(rows: list[dict[str, Any]], names: list[str]) -> str:
    """Every trial, one line each; the searched options one column each."""
    fields = ["trial", "state", "value", "sd", "runs", *names, "pruned_at_epoch"]
    fields += ["run_dir", "error"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {k: v for k, v in row.items() if k != "params"} | row["params"]
        writer.writerow({k: "" if flat.get(k) is None else flat[k] for k in fields})
    return buffer.getvalue()


def header(study: Any, settings: TuneSettings, rows: list[dict[str, Any]]) -> str:
    counts = {s: sum(r["state"] == s for r in rows) for s in ORDER}
    told = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    best = next((r for r in rows if r["state"] == "complete"), None)
    what = "minimized" if settings.objective == "test_neg_elbo" else "maximized"
    per = f", mean of {settings.replicates} seeds" if settings.replicates > 1 else ""
    line = (
        f"Study {study.study_name!r} ({shown_url(settings.url)}): {len(rows)} trials ({told}); "
        f"{settings.objective} {what}{per}."
    )
    if best is not None:
        line += f" Best: trial {best['trial']}, {value_cell(best)}."
    if len(rows) > SHOWN:
        line += f" The best {SHOWN} are shown; every trial is in {TABLE}.csv."
    return line


def write_summary(study: Any, settings: TuneSettings) -> str:
    """OUT/tune.md, .csv, .json and .png from what ``study`` holds now; returns the Markdown
    (header and table)."""
    out = Path(settings.out)
    with out_lock(out):  # read and written together: the last worker writes the whole study
        rows = trial_rows(study)
        names = [s.name for s in settings.space]
        names += sorted({n for r in rows for n in r["params"]} - set(names))
        record = {"study": study.study_name, "storage": shown_url(settings.url)}
        record |= settings.setup() | {"trials": settings.trials}
        write_json(out / f"{TABLE}.json", {"config": record, "rows": rows})
        table = columns(names, settings.objective)
        shown = markdown_table(header(study, settings, rows), table, rows[:SHOWN])
        write_text(out / f"{TABLE}.md", shown)
        write_text(out / f"{TABLE}.csv", csv_text(rows, names))
        draw_study(study, rows, settings.objective, out / f"{TABLE}.png")
    return shown
