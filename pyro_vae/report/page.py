"""The one-page HTML report of a run: RUN_DIR/report.html, a single self-contained file with
the key numbers, the figures (embedded), the per-epoch metrics and the config."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from ..data import DATASETS
from ..inference import ESTIMATORS
from ..training import RunDirectoryError, TrainConfig, options, read_config
from ..training.run_dir import (
    EVALUATION,
    FIGURES,
    METRICS,
    REPORT,
    SUMMARY,
    read_metrics,
    write_text,
)
from .figures import FIGURES as FIGURE_CAPTIONS


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


# The one rule for every number the page reports (the key numbers, the metrics table, the
# notes): counts (epochs, units, samples) as whole numbers, everything else (nats, seconds,
# beta) to two decimals, never in exponent notation: 70305.66, not 7.031e+04.
DECIMALS = 2
COUNTS = {"epoch", "active_units", "num_samples"}


def _fmt(value: object, count: bool = False) -> str:
    """A reported value by the page's one rule (above); NaN (a quantity the run has none of,
    such as an autoencoder's rate) as NaN, lists item by item, anything else as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if count or isinstance(value, int):
            return f"{value:.0f}"
        return f"{round(value, DECIMALS) + 0.0:.{DECIMALS}f}"  # + 0.0: no "-0.00"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v, count) for v in value)
    return html.escape(str(value))


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c, ''), c in COUNTS)}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# applied options the configuration table leaves out: nothing in the run depends on them
NOT_SHOWN = {"progress"}  # whether the terminal showed a progress bar


def _setting(value: object) -> str:
    """An option's value as config.json records it (settings are not rounded: lr 0.0001)."""
    if isinstance(value, (list, tuple)):
        return ", ".join(_setting(v) for v in value)
    return html.escape(str(value))


def _builder_default(config: TrainConfig, name: str) -> str | None:
    """What an option left unset (``None`` where it applies) means: the default of the dataset
    or estimator that takes it (``particles``: 5 for iwae, else 1), in words; None where no
    builder gives one."""
    opt = options()[name]
    if opt.group not in ("data", "estimator"):
        return None
    registry, chosen = (
        (DATASETS, config.dataset) if opt.group == "data" else (ESTIMATORS, config.estimator)
    )
    if chosen not in registry:  # (data given from Python: no builder)
        return None
    default = registry.defaults(chosen).get(opt.param or name)
    if default is None:
        return None
    return f"{_setting(default)} (the default of {registry.kind} {html.escape(chosen)})"


def _config_rows(config: TrainConfig) -> list[dict]:
    """The options that apply to this run, with their values (as HTML), in the order they are
    declared. config.json records an option that does not apply as null: it has no row here;
    nor has an applied one left unset that no builder gives a default (``data_dir`` for a
    built-in dataset)."""
    rows = []
    for name, opt in options().items():
        if name in NOT_SHOWN or not config.applies(name):
            continue
        value = getattr(config, name)
        shown = _setting(value) if value is not None else _builder_default(config, name)
        if shown is not None:
            rows.append({"group": opt.group, "option": name, "value": shown})
    for name, value in config.part_options.items():  # the options of the user's own parts
        rows.append({"group": "model", "option": name, "value": _setting(value)})
    if config.plugins:  # the modules that made the run, as it records them
        made = [f"{p.get('spec')} (sha256 {str(p.get('sha256'))[:12]})" for p in config.plugins]
        rows.append({"group": "run", "option": "plugins", "value": _setting(made)})
    source = config.data_source
    if source:  # where the user's data came from, as the run records it
        where = source.get("path") or source.get("kind") or source.get("format")
        read = {"stream": "streamed from disk", "device": "held on the device"}.get(
            source.get("read", ""), ""
        )
        said = f"{source.get('format')} {where}; {source.get('train')} train / " + (
            f"{source.get('test')} test rows ({read})"
        )
        rows.append({"group": "data", "option": "source", "value": _setting(said)})
    return rows


def _config_table(rows: list[dict]) -> str:
    """The rows of :func:`_config_rows` (their values already written as HTML)."""
    head = "".join(f"<th>{c}</th>" for c in ("group", "option", "value"))
    body = "".join(
        f"<tr><td>{r['group']}</td><td>{html.escape(r['option'])}</td><td>{r['value']}</td></tr>"
        for r in rows
    )
    return f'<table class="config"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
.numbers { display: flex; flex-wrap: wrap; gap: 1em; }
.numbers div { background: #f6f8fa; padding: 0.6em 1em; border-radius: 6px; }
.numbers b { display: block; font-size: 1.3em; }
.scroll { max-height: 28em; overflow-y: auto; display: inline-block; }
.note { font-size: 0.85em; color: #555; }
table.config td, table.config th { text-align: left; }
"""


METRIC_COLUMNS = [
    "epoch",
    "beta",
    "train_loss",
    "train_neg_elbo",
    "test_neg_elbo",
    "test_distortion",
    "test_rate",
    "test_error",
    "train_seconds",
]


def _read_json(path: Path) -> dict:
    """A JSON object from the run directory ({} if absent); one line if it is not one."""
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise RunDirectoryError(f"{str(path)!r} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise RunDirectoryError(f"{str(path)!r} holds a {type(value).__name__}, not an object")
    return value


def _evaluation(run_dir: Path, epochs: int) -> tuple[dict, str]:
    """evaluation.json if it measured the model the run now holds, else ({}, a note)."""
    evaluation = _read_json(run_dir / EVALUATION)
    if evaluation and evaluation.get("epoch") != epochs:
        note = (
            f"<p>evaluation.json measured the model of epoch "
            f"{_fmt(evaluation.get('epoch'), count=True)}; "
            f"the run is at epoch {epochs}: run <code>pyro-vae evaluate</code> again.</p>"
        )
        return {}, note
    return evaluation, ""


def _cards(config: dict, summary: dict, evaluation: dict) -> str:
    """The key numbers, each a card; those the run has not measured are left out."""
    ais = evaluation.get("ais") or {}
    numbers = [
        ("test -ELBO", summary.get("test_neg_elbo"), "nats"),
        ("test distortion", summary.get("test_distortion"), "nats"),
        ("test rate (KL)", summary.get("test_rate"), "nats"),
        (
            f"test log p(x), K={_fmt(evaluation.get('num_samples'), count=True)}",
            evaluation.get("test_log_likelihood"),
            "nats",
        ),
        (
            f"test log p(x), AIS T={_fmt(ais.get('steps'), count=True)}",
            ais.get("test_log_likelihood"),
            "nats",
        ),
        (
            "BDMC gap on simulated images",
            (evaluation.get("bdmc") or {}).get("gap"),
            "nats (upper - lower bound)",
        ),
        ("active units", evaluation.get("active_units"), f"of {config.get('z_dim')}"),
        ("seconds per epoch", summary.get("seconds_per_epoch"), summary.get("device", "")),
    ]
    return "".join(
        f"<div>{html.escape(label)}<b>{_fmt(value, label == 'active units')}</b>"
        f"{html.escape(str(unit))}</div>"
        for label, value, unit in numbers
        if value is not None
    )


def _title(config: dict) -> str:
    if config.get("autoencoder"):
        return f"{config['dataset']}: deterministic autoencoder, z={config['z_dim']}"
    if config.get("likelihood") is None:  # a model the user built: its parts are its own
        return (
            f"{config['dataset']}: the user's model ({config['model']}), "
            f"{config['estimator']} estimator, beta={config['beta']}"
        )
    return (
        f"{config['dataset']}: {config['likelihood']} likelihood, {config['prior']} prior, "
        f"{config['estimator']} estimator, beta={config['beta']}, z={config['z_dim']}"
    )


def _reference_check(summary: dict) -> str:
    reference = summary.get("reference_check")
    if not isinstance(reference, dict):
        return ""
    if reference.get("check") == "pyro":
        return html.escape(
            f"Check on the first batch (no hand-written loss: "
            f"{reference.get('no_hand_written')}): {reference.get('compared')} "
            f"{_fmt(reference.get('step_loss'))} = {reference.get('against')} "
            f"{_fmt(reference.get('pyro_loss'))}."
        ).join(("<p>", "</p>"))
    return (
        f"<p>Reference check on the first batch: Pyro's loss {_fmt(reference.get('pyro_loss'))},"
        f" hand-written loss {_fmt(reference.get('reference_loss'))}.</p>"
    )


def write_report(run_dir: str | Path) -> Path:
    """RUN_DIR/report.html: key numbers, figures (embedded), config and per-epoch metrics."""
    run_dir = Path(run_dir)
    settings = read_config(run_dir)  # parsed against the options schema
    config = settings.as_dict()
    metrics = read_metrics(run_dir / METRICS) if (run_dir / METRICS).exists() else []
    summary = _read_json(run_dir / SUMMARY)
    evaluation, stale = _evaluation(run_dir, len(metrics))
    figures = "".join(
        f"<figure>{_image(run_dir / FIGURES / name)}"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in FIGURE_CAPTIONS
        if (run_dir / FIGURES / name).exists()
    )
    columns = [c for c in METRIC_COLUMNS if metrics and c in metrics[0]]
    used = _config_rows(settings)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>pyro-vae run {html.escape(run_dir.name)}</title><style>{STYLE}</style></head>
<body>
<h1>pyro-vae run <code>{html.escape(str(run_dir))}</code></h1>
<p>{html.escape(_title(config))}; {len(metrics)} epochs.</p>
<div class="numbers">{_cards(config, summary, evaluation)}</div>
{stale}{_reference_check(summary)}
<h2>Figures</h2>
{figures}
<h2>Metrics per epoch (nats per image)</h2>
<div class="scroll">{_table(metrics, columns)}</div>
<p class="note">Numbers: counts whole, all others (nats, seconds, beta) to {DECIMALS} decimals.</p>
<h2>Configuration (the options that apply to this run)</h2>
{_config_table(used)}
</body></html>
"""
    path = run_dir / REPORT
    write_text(path, page)
    return path
