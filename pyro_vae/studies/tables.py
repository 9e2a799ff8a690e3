"""The one table writer every study uses: its rows as JSON (with what they were measured with)
and as a Markdown table, both written atomically; and the same table over a study's
replicates (``--replicates K``), each measure as mean ± sd."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..training.run_dir import write_json, write_text

# (key, title, format): a format spec for row[key] (".2f", "" for str()), or a function of the
# whole row for cells that combine values ("-104.28 ± 0.02"); a missing value shows as a dash
Column = tuple[str, str, "str | Callable[[dict], str]"]


def cell(row: dict[str, Any], key: str, fmt: str | Callable[[dict], str]) -> str:
    if callable(fmt):
        return fmt(row)
    value = row.get(key)
    if "replicates" in row:  # a row over replicates: a measure's mean ± sd, or each one's value
        if f"{key}_sd" in row:
            spec = fmt or ".1f"
            return f"{value:{spec}} ± {row[key + '_sd']:{spec.lstrip('+')}}"
        if isinstance(value, list):
            return " / ".join(cell({key: v}, key, fmt) for v in value)
    if value is None:
        return "—"
    return format(value, fmt) if fmt else str(value)


def markdown_table(header: str, columns: Sequence[Column], rows: Sequence[dict]) -> str:
    """``header``, a blank line, then the table."""
    body = [[cell(r, k, f) for k, _, f in columns] for r in rows]
    return _markdown(header, [title for _, title, _ in columns], body)


def _markdown(header: str, titles: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = [header, "", "| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Table:
    """A table as a study wrote it (the arguments of :func:`write_tables` after ``out``)."""

    name: str
    config: dict[str, Any]
    rows: list[dict]
    header: str
    columns: Sequence[Column]


# while a study runs as one of several replicates: the tables it writes, by name (the last
# version of each: a study may rewrite its table as its rows come in)
_RECORDED: ContextVar[dict[str, Table] | None] = ContextVar("recorded", default=None)


@contextmanager
def recording() -> Iterator[dict[str, Table]]:
    """The tables written inside the ``with`` block, by name (each one's last version)."""
    tables: dict[str, Table] = {}
    token = _RECORDED.set(tables)
    try:
        yield tables
    finally:
        _RECORDED.reset(token)


def write_tables(
    out: Path,
    name: str,
    config: dict[str, Any],
    rows: list[dict],
    header: str,
    columns: Sequence[Column],
) -> str:
    """OUT/NAME.json ({"config", "rows"}) and OUT/NAME.md; returns the Markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", {"config": config, "rows": rows})
    text = markdown_table(header, columns, rows)
    write_text(out / f"{name}.md", text)
    recorded = _RECORDED.get()
    if recorded is not None:
        recorded[name] = Table(name, dict(config), [dict(r) for r in rows], header, list(columns))
    return text


# --- one table over replicates --------------------------------------------------------------


def _numbers(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _agreed(values: Sequence[Any]) -> Any:
    """The value where every replicate has the same, else each one's, in a list."""
    return values[0] if all(v == values[0] for v in values) else list(values)


def over_replicates(replicates: Sequence[Sequence[dict]]) -> list[dict]:
    """The rows of one table from each replicate, merged row by row. A number that differs
    between replicates anywhere in its column is a measure: each row gives its mean (under its
    own key, so what reads a row reads the mean, and under ``KEY_mean``) and its sample sd
    (``KEY_sd``, ddof=1). Anything else (a setting such as beta) is kept where every replicate
    agrees and listed, one value per replicate, where they differ (the runs' directories).
    Each row also gives ``replicates``, their number."""
    if len({len(rows) for rows in replicates}) != 1:
        raise ValueError("the replicates' tables have different numbers of rows")
    lined_up = [
        (reps, {k: [r.get(k) for r in reps] for r in reps for k in r})
        for reps in zip(*replicates, strict=True)
    ]
    measures = {
        key
        for _, by_key in lined_up
        for key, values in by_key.items()
        if _numbers(values) and any(v != values[0] for v in values)
    }
    merged = []
    for reps, by_key in lined_up:
        row: dict[str, Any] = {}
        for key, values in by_key.items():
            if key in measures and _numbers(values):
                mean = statistics.fmean(values)
                row |= {key: mean, f"{key}_mean": mean, f"{key}_sd": statistics.stdev(values)}
            else:
                row[key] = _agreed(values)
        merged.append(row | {"replicates": len(reps)})
    return merged


def write_replicated(
    out: Path, tables: Sequence[Table], seeds: Sequence[int]
) -> tuple[list[dict], str]:
    """OUT/NAME.json and OUT/NAME.md of the table each replicate of a study wrote (its seeds
    ``seeds``, in order): the rows :func:`over_replicates` makes, and the replicates' config
    (where they differ, each one's) with ``replicates`` and ``seeds``. Returns the rows and
    the Markdown."""
    first, count = tables[0], len(tables)
    rows = over_replicates([t.rows for t in tables])
    keys = dict.fromkeys(k for t in tables for k in t.config)
    config = {k: _agreed([t.config.get(k) for t in tables]) for k in keys}
    config |= {"replicates": count, "seeds": list(seeds)}
    header = _agreed_text([t.header for t in tables]) + (
        f"\n\nmean ± sd (sample sd) over {count} replicates, seeds "
        f"{', '.join(map(str, seeds))}, each under seed-SEED/"
    )
    body = [
        [_replicated_cell(tables, i, j, row) for j in range(len(first.columns))]
        for i, row in enumerate(rows)
    ]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{first.name}.json", {"config": config, "rows": rows})
    text = _markdown(header, [title for _, title, _ in first.columns], body)
    write_text(out / f"{first.name}.md", text)
    return rows, text


def _replicated_cell(tables: Sequence[Table], i: int, j: int, row: dict) -> str:
    """Column ``j`` of merged row ``i``. A cell the study computes from its whole row (and
    what it saw beside it, a reference row) is computed in each replicate and merged."""
    key, _, fmt = tables[0].columns[j]
    if not callable(fmt) or getattr(fmt, "over_replicates", False):
        return cell(row, key, fmt)
    return merged_cells([cell(t.rows[i], key, t.columns[j][2]) for t in tables])


def merged_cells(cells: Sequence[str]) -> str:
    """One cell for each replicate's: mean ± sd where each is a number (with as many decimals
    and the sign as they show), else the cell where all agree, else each one's."""
    try:
        values = [float(c.replace("−", "-")) for c in cells]
    except ValueError:
        return cells[0] if len(set(cells)) == 1 else " / ".join(cells)
    decimals = len(cells[0].partition(".")[2])
    sign = "+" if cells[0].startswith("+") else ""
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    return f"{mean:{sign}.{decimals}f} ± {sd:.{decimals}f}"


def _agreed_text(texts: Sequence[str]) -> str:
    """Texts that differ in one stretch (a header naming its seed) as one, the stretch as
    each one's joined by '/': '..., seed 0/1; test images'."""
    if len(set(texts)) == 1:
        return texts[0]
    start = len(os.path.commonprefix(list(texts)))
    end = len(os.path.commonprefix([t[::-1] for t in texts]))
    end = min(end, min(map(len, texts)) - start)

    def word(c: str) -> bool:
        return c.isalnum() or c in ".-_"

    while start and word(texts[0][start - 1]):  # whole words and numbers differ, not digits
        start -= 1
    while end and word(texts[0][len(texts[0]) - end]):
        end -= 1
    middles = "/".join(t[start : len(t) - end] for t in texts)
    return texts[0][:start] + middles + texts[0][len(texts[0]) - end :]


def _reads_replicates(show: Callable[[dict], str]) -> Callable[[dict], str]:
    show.over_replicates = True  # type: ignore[attr-defined]  # it shows a merged row itself
    return show


def plus_minus(key: str, stderr: str) -> Callable[[dict], str]:
    """A cell 'value ± standard error'; over replicates, 'mean ± sd' of the value (the spread
    between seeds, not one estimate's error)."""

    def show(r: dict) -> str:
        spread = r.get(f"{key}_sd", r[stderr]) if "replicates" in r else r[stderr]
        return f"{r[key]:.2f} ± {spread:.2f}"

    return _reads_replicates(show)


def of_total(key: str, total: str) -> Callable[[dict], str]:
    """A cell 'count/total' (active units of the latent dimensions); over replicates,
    '(mean ± sd)/total'."""

    def show(r: dict) -> str:
        if "replicates" in r and f"{key}_sd" in r:
            return f"({r[key]:.1f} ± {r[key + '_sd']:.1f})/{r[total]}"
        return f"{r[key]}/{r[total]}"

    return _reads_replicates(show)
