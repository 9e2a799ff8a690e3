"""The manual's tables that the tool writes stay in step with the code."""

from __future__ import annotations

from pathlib import Path

from fault_injection.__main__ import DOC_BEGIN, DOC_END
from fault_injection.cases import CASES

ROOT = Path(__file__).resolve().parents[1]
PLATFORM_CASES = {"cuda-without-gpu"}  # a case only where no GPU is present


def _fault_table_rows() -> list[list[str]]:
    text = (ROOT / "docs" / "reliability.md").read_text()
    table = text.split(DOC_BEGIN, 1)[1].split(DOC_END, 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]  # no header
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in rows]


def test_the_fault_table_lists_every_case_as_the_code_states_it():
    rows = _fault_table_rows()
    documented = [(r[0], r[1].replace("\\|", "|")) for r in rows if r[0] not in PLATFORM_CASES]
    code = [(c.name, c.expected) for c in CASES if c.name not in PLATFORM_CASES]
    regenerate = "python -m tests.fault_injection --doc docs/reliability.md"
    assert documented == code, f"the table is out of date: {regenerate}"
    assert all(r[-1] == "yes" for r in rows), [r[0] for r in rows if r[-1] != "yes"]
