"""The one table writer every study uses: its rows as JSON (with what they were measured with)
and as a Markdown table, both written atomically."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    if value is None:
        return "—"
    return format(value, fmt) if fmt else str(value)


def markdown_table(header: str, columns: Sequence[Column], rows: Sequence[dict]) -> str:
    """``header``, a blank line, then the table."""
    lines = [
        header,
        "",
        "| " + " | ".join(title for _, title, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(cell(r, k, f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


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
    return text


def plus_minus(key: str, stderr: str) -> Callable[[dict], str]:
    """A cell 'value ± standard error'."""
    return lambda r: f"{r[key]:.2f} ± {r[stderr]:.2f}"


def of_total(key: str, total: str) -> Callable[[dict], str]:
    """A cell 'count/total' (active units of the latent dimensions)."""
    return lambda r: f"{r[key]}/{r[total]}"
