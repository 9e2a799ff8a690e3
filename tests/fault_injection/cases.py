"""Every fault-injection case, in the order the table lists them. Each case runs the real
command line and returns (what happened, as expected?); the cases are in
:mod:`cases_input` (bad input), :mod:`cases_data` (your data by path), :mod:`cases_training`
(faults while training) and :mod:`cases_run_dir` (the run directory's
contract: one writer, nothing lost, mixed, half-written or executed)."""

from __future__ import annotations

from .cases_data import DATA_CASES
from .cases_input import INPUT_CASES
from .cases_run_dir import RUN_DIR_CASES
from .cases_training import TRAINING_CASES

CASES = [*INPUT_CASES, *DATA_CASES, *TRAINING_CASES, *RUN_DIR_CASES]
