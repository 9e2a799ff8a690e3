"""Fault injection, end to end: bad input, faults during training, kills and resumes.

    python -m tests.fault_injection [--out runs/fault-injection] [--only SUBSTRING]
                                    [--doc docs/reliability.md]

(from the repository root, with the test dependencies installed). Every case (:mod:`cases`)
runs the real ``pyro-vae train`` command line
in a subprocess (faults that need a hand inside the process are injected by a short wrapper
that patches one function, then calls the same entry point) and compares what happened with
what should. Prints a table (case | expected | got | ok) and writes it as JSON and Markdown;
exits 1 if any case fails. ``tests/cli/test_fault_injection.py`` runs each case as its own test
(in this process where a case injects nothing).
``--doc FILE`` writes the table into FILE between the two marker comments ``DOC_BEGIN`` and
``DOC_END`` (the manual's table comes from the tool itself; ``tests/test_docs.py`` fails when
its cases drift from the code's).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pyro_vae.cli.help import CommandParser
from pyro_vae.studies.tables import markdown_table, write_tables
from pyro_vae.training.atomic_files import write_text

from .cases import CASES
from .harness import Workspace

DOC_BEGIN = "<!-- fault-injection table: begin (python -m tests.fault_injection --doc) -->"
DOC_END = "<!-- fault-injection table: end -->"


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        default=None,
        help="where to write fault_injection.json and .md (default: print the table only)",
    )
    p.add_argument(
        "--only",
        default="",
        metavar="SUBSTRING",
        help="run the cases whose name contains this (default: every case)",
    )
    p.add_argument(
        "--doc",
        default=None,
        metavar="FILE",
        help="Markdown file whose marked table to replace (default: none)",
    )


def write_doc_table(path: Path, table: str) -> None:
    """Replace the text between DOC_BEGIN and DOC_END in ``path`` with ``table``."""
    text = path.read_text()
    if DOC_BEGIN not in text or DOC_END not in text:
        raise ValueError(f"{str(path)!r} has no fault-injection table markers ({DOC_BEGIN})")
    before, rest = text.split(DOC_BEGIN, 1)
    after = rest.split(DOC_END, 1)[1]
    write_text(path, f"{before}{DOC_BEGIN}\n{table}{DOC_END}{after}")


def run(args: argparse.Namespace) -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="pyro-vae-faults-") as scratch:
        ws = Workspace(Path(scratch))
        for case in CASES:
            if args.only not in case.name:
                continue
            t0 = time.perf_counter()
            try:
                got, ok = case.run(ws)
            except Exception as err:  # a case that breaks is a failed case, not a crash
                got, ok = f"{type(err).__name__}: {err}", False
            rows.append(
                {
                    "case": case.name,
                    "expected": case.expected.replace("|", "\\|"),
                    "got": got.replace(scratch, "DIR").replace("|", "\\|"),
                    "ok": ok,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            print(f"{'ok  ' if ok else 'FAIL'} {case.name}: {got}", flush=True)
    columns = [("case", "case", ""), ("expected", "expected", ""), ("got", "got", "")]
    columns.append(("", "ok", lambda r: "yes" if r["ok"] else "NO"))
    header = f"{len(rows)} cases, {sum(r['ok'] for r in rows)} as expected"
    if args.out:
        print(write_tables(Path(args.out), "fault_injection", vars(args), rows, header, columns))
    else:
        print(markdown_table(header, columns, rows))
    if args.doc:
        if args.only:
            raise ValueError("--doc writes the whole table: leave out --only")
        write_doc_table(Path(args.doc), markdown_table(header, columns, rows))
    return 0 if all(r["ok"] for r in rows) else 1


def parser() -> CommandParser:
    """The harness's command line, its help showing every default."""
    p = CommandParser(
        prog="python -m tests.fault_injection",
        description="bad input, NaN losses, signals and kills, end to end",
    )
    _arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
