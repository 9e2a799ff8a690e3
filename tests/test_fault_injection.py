"""Each case of ``scripts/fault_injection.py`` as a test: the real CLI in a subprocess."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parent.parent / "scripts" / "fault_injection.py"
_spec = importlib.util.spec_from_file_location("fault_injection", _path)
faults = importlib.util.module_from_spec(_spec)
sys.modules["fault_injection"] = faults  # dataclasses look their module up there
_spec.loader.exec_module(faults)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    # bad-input cases run the CLI's main() in this process; kills and injected faults still
    # run the real command in a subprocess
    faults.IN_PROCESS = True
    yield faults.Workspace(tmp_path_factory.mktemp("faults"))
    faults.IN_PROCESS = False


@pytest.mark.parametrize("case", faults.CASES, ids=[c.name for c in faults.CASES])
def test_fault_case(workspace, case):
    got, ok = case.run(workspace)
    assert ok, f"{case.name}: expected {case.expected}; got {got}"
