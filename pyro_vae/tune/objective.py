"""What a trial measures: a setting drawn from the space, trained as ordinary runs, scored.

Each trial is one run directory, OUT/trial-0007/ (Optuna's trial number), trained by
:func:`pyro_vae.train` on the base options and the trial's setting; with ``replicates`` K > 1
it is K runs, OUT/trial-0007/seed-S/ for the seeds S = seed, ..., seed + K - 1, and its value
is their mean (their standard deviation is recorded beside it). The value is the final test
-ELBO (``test_neg_elbo``, minimized) or the importance-sampled test log p(x) of
:func:`pyro_vae.evaluate_run` (``log_px``, maximized).

After each epoch the trial reports the test -ELBO (``log_px``: the test ELBO, a lower bound
on it, so that larger is better for both) to Optuna (``trial.report``) at step
``replicate * epochs + epoch``, and stops when the pruner says the trial is behind the others
(``trial.should_prune``): the run ends there, once the epoch is saved (its metrics.csv and
checkpoint at that epoch: ``pyro-vae train --resume`` could go on with it), and the trial is
pruned (``optuna.TrialPruned``, raised by the loop through ``Trainer.stop_request``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..training import Observer, evaluate_run
from ..workflow import train
from .optuna_import import optuna_module
from .space import Searched, config_of
from .storage import OBJECTIVES


class PruneCheck(Observer):
    """Reports each epoch's test -ELBO to an Optuna trial and stops the run when the trial
    should be pruned (as Optuna's integrations do for other training loops)."""

    def __init__(self, trial: Any, offset: int, sign: float) -> None:
        self.trial, self.offset, self.sign = trial, offset, sign

    def on_epoch_end(self, trainer: Any, row: dict[str, float]) -> None:
        epoch = int(row["epoch"])
        self.trial.report(self.sign * row["test_neg_elbo"], self.offset + epoch)
        if self.trial.should_prune():  # the loop stops once this epoch is saved
            self.trial.set_user_attr("pruned_at_epoch", epoch)
            trainer.stop_request = optuna_module().TrialPruned(f"pruned after epoch {epoch}")


def mean_and_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean of the replicates' values and their sample standard deviation (None for
    one)."""
    sd = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), sd


def as_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass
class Objective:
    """A trial's runs and its value. ``base``: the options every run starts from (as the
    config file gave them); ``plugins``: modules that define their parts; ``num_samples``,
    ``max_images``: how ``log_px`` is measured."""

    base: Mapping[str, Any]
    space: Sequence[Searched]
    out: Path
    objective: str = "test_neg_elbo"
    replicates: int = 1
    plugins: Sequence[str] = ()
    num_samples: int = 5000
    max_images: int | None = None
    seed: int = field(init=False)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}: {', '.join(OBJECTIVES)}")
        self.seed = int(self.base.get("seed", 0))

    def run_dirs(self, number: int) -> list[Path]:
        """The run directories of trial ``number``, one per replicate."""
        trial_dir = Path(self.out) / f"trial-{number:04d}"
        if self.replicates == 1:
            return [trial_dir]
        return [trial_dir / f"seed-{self.seed + r}" for r in range(self.replicates)]

    def __call__(self, trial: Any) -> float:
        """Train the trial's setting (every replicate) and return its value."""
        setting = {s.name: s.suggest(trial) for s in self.space}
        runs = self.run_dirs(trial.number)
        trial.set_user_attr("params", {k: as_json(v) for k, v in setting.items()})
        trial.set_user_attr("run_dir", str(Path(self.out) / f"trial-{trial.number:04d}"))
        trial.set_user_attr("run_dirs", [str(r) for r in runs])
        values: list[float] = []
        for r, run_dir in enumerate(runs):
            values.append(self._replicate(trial, setting, r, run_dir))
            trial.set_user_attr("values", values)
        mean, sd = mean_and_sd(values)
        trial.set_user_attr("value_sd", sd)
        return mean

    def _replicate(self, trial: Any, setting: dict[str, Any], r: int, run_dir: Path) -> float:
        options = {**self.base, **setting, "seed": self.seed + r}
        config = config_of(options | {"out": str(run_dir), "progress": False})
        sign = 1.0 if self.objective == "test_neg_elbo" else -1.0
        check = PruneCheck(trial, r * config.epochs, sign)
        result = train(config, plugins=list(self.plugins), observers=[check])
        if self.objective == "test_neg_elbo":
            return float(result.summary["test_neg_elbo"])
        measured = evaluate_run(
            run_dir, self.num_samples, config.device, self.max_images, progress=False
        )
        return float(measured["test_log_likelihood"])
