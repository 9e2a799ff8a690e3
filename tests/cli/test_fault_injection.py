"""Each fault-injection case (:mod:`fault_injection`) as a test: the real CLI, in a subprocess
where a fault is injected inside the process, else in this one."""

from __future__ import annotations

import pytest
from fault_injection import harness
from fault_injection.cases import CASES


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    # bad-input cases run the CLI's main() in this process; kills and injected faults still
    # run the real command in a subprocess
    harness.run_in_process(True)
    yield harness.Workspace(tmp_path_factory.mktemp("faults"))
    harness.run_in_process(False)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault_case(workspace, case):
    got, ok = case.run(workspace)
    assert ok, f"{case.name}: expected {case.expected}; got {got}"
