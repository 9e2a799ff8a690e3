"""Each case of ``pyro-vae study fault-injection`` as a test: the real CLI in a subprocess."""

from __future__ import annotations

import pytest

from pyro_vae.cli import main
from pyro_vae.studies import faults
from pyro_vae.studies.fault_cases import CASES


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    # bad-input cases run the CLI's main() in this process; kills and injected faults still
    # run the real command in a subprocess
    faults.IN_PROCESS = main
    yield faults.Workspace(tmp_path_factory.mktemp("faults"))
    faults.IN_PROCESS = None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault_case(workspace, case):
    got, ok = case.run(workspace)
    assert ok, f"{case.name}: expected {case.expected}; got {got}"
