"""One worker of a study: it joins the study, runs trials until the study has its total, and
writes the summary. Start as many as there are machines or cores to spare, with the same
``--storage`` and ``--study-name``: they share the trials (:mod:`pyro_vae.tune.storage`).

A trial whose run stops on a non-finite loss, or whose setting makes no valid config (a
combination of searched options that do not go together), is recorded as failed, with the
reason, and the search goes on; any other error, or a signal, fails the trial and stops the
worker (a trial is never run twice: a failed one keeps its place and its run directory).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..training import ConfigError, NonFiniteLoss
from .objective import Objective
from .optuna_import import optuna_module
from .space import Searched
from .storage import (
    OBJECTIVES,
    STUDY_FILE,
    load_study,
    make_pruner,
    open_storage,
    open_study,
    out_lock,
    reserve_trial,
    storage_url,
)
from .summary import write_summary


@dataclass
class TuneSettings:
    """What ``pyro-vae tune`` was asked (its flags; ``base`` and ``space`` from its file)."""

    base: Mapping[str, Any]
    space: Sequence[Searched]
    trials: int = 20
    out: Path = Path("runs/tune")
    storage: str | None = None
    study_name: str = "pyro-vae"
    objective: str = "test_neg_elbo"
    replicates: int = 1
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    plugins: Sequence[str] = ()
    num_samples: int = 5000
    max_images: int | None = None
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.url = storage_url(self.storage, self.out)

    def setup(self) -> dict[str, Any]:
        """What the study searches, recorded by its first worker (JSON)."""
        base = {k: list(v) if isinstance(v, tuple) else v for k, v in self.base.items()}
        setup = {
            "objective": self.objective,
            "replicates": self.replicates,
            "base": base,
            "space": {s.name: s.record() for s in self.space},
        }
        if self.objective == "log_px":  # how it is measured is part of the value
            setup["measure"] = {"num_samples": self.num_samples, "max_images": self.max_images}
        return setup

    def objective_function(self) -> Objective:
        return Objective(
            self.base, self.space, self.out, self.objective, self.replicates, self.plugins,
            self.num_samples, self.max_images,
        )  # fmt: skip


def announce(message: str) -> None:
    """One line of the search's progress, on stderr like the runs' own."""
    print(f"tune: {message}", file=sys.stderr, flush=True)


def run_worker(settings: TuneSettings) -> str:
    """Join the study, run trials while it has fewer than ``settings.trials``, write the
    summary; returns the summary's table (Markdown)."""
    direction = OBJECTIVES[settings.objective]
    pruner = make_pruner(settings.pruner)
    with out_lock(settings.out):  # workers starting together: one makes the tables, the study
        storage = open_storage(settings.url)
        study = open_study(storage, settings.study_name, direction, pruner, settings.setup())
    objective = settings.objective_function()
    ran = 0
    while True:
        trial = reserve_trial(study, settings.trials, settings.out, settings.sampler, settings.seed)
        if trial is None:
            break
        run_trial(study, trial, objective)
        ran += 1
    announce(f"the study has its {settings.trials} trials ({ran} run by this worker)")
    return write_summary(study, settings)


def summary_only(settings: TuneSettings) -> str:
    """The summary of the study as its storage holds it, written again; no trial runs."""
    if settings.storage is None and not (settings.out / STUDY_FILE).exists():
        raise ValueError(f"no study in {settings.out / STUDY_FILE}: run pyro-vae tune first")
    study = load_study(open_storage(settings.url), settings.study_name)
    return write_summary(study, settings)


def run_trial(study: Any, trial: Any, objective: Objective) -> None:
    """Run ``trial`` and tell the study how it ended (complete, pruned or failed)."""
    optuna = optuna_module()
    state = optuna.trial.TrialState
    announce(f"trial {trial.number}: training in {objective.run_dirs(trial.number)[0]}")
    try:
        value = objective(trial)
    except optuna.TrialPruned as pruned:
        study.tell(trial, state=state.PRUNED)
        announce(f"trial {trial.number}: {pruned}")
    except (NonFiniteLoss, ConfigError) as err:
        reason = " ".join(str(err).split())
        trial.set_user_attr("error", reason)
        study.tell(trial, state=state.FAIL)
        announce(f"trial {trial.number} failed: {reason}")
    except BaseException as err:  # a fault or a signal: recorded, then the worker stops
        trial.set_user_attr("error", " ".join(str(err).split()) or type(err).__name__)
        study.tell(trial, state=state.FAIL)
        raise
    else:
        study.tell(trial, value)
        announce(f"trial {trial.number}: {objective.objective} {value:.4f}")
