"""Every fault-injection case, in the order the table lists them. Each case runs the real
command line and returns (what happened, as expected?); the cases are in
:mod:`~pyro_vae.studies.fault_input` (bad input), :mod:`~pyro_vae.studies.fault_training`
(faults while training) and :mod:`~pyro_vae.studies.fault_run_dir` (the run directory's
contract: one writer, nothing lost, mixed, half-written or executed)."""

from __future__ import annotations

from .fault_input import INPUT_CASES
from .fault_run_dir import RUN_DIR_CASES
from .fault_training import TRAINING_CASES

CASES = [*INPUT_CASES, *TRAINING_CASES, *RUN_DIR_CASES]
