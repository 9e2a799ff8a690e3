"""Where a study lives and how several workers share it.

A study is kept by Optuna in a database (``optuna.storages.RDBStorage``: any SQLAlchemy URL;
by default ``sqlite:///OUT/study.db``). Every worker started with the same ``--storage`` and
``--study-name`` joins the same study (``load_if_exists``), and the first one records what the
study searches (objective, replicates, base options, space): a worker started with other
settings is refused rather than mixed in.

``--trials N`` is the study's total over all its workers. Before each trial a worker counts
the study's trials (of every state, running ones too, as Optuna's
``MaxTrialsCallback(N, states=None)`` counts them) and asks for a new one only while there are
fewer than N; counting and asking happen under one lock on OUT/.tune.lock, so two workers
never both take the last place, and each trial's number (0, 1, ...; Optuna's, unique in the
study) names its run directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .optuna_import import optuna_module

STUDY_FILE = "study.db"
LOCK_FILE = ".tune.lock"
SETUP = "pyro_vae_tune"  # the study's user attribute recording what it searches
SQLITE_TIMEOUT_S = 60  # how long a worker waits for another's write to SQLite
OBJECTIVES = {"test_neg_elbo": "minimize", "log_px": "maximize"}  # the study's direction
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")


def storage_url(given: str | None, out: Path) -> str:
    """``given``, or the default: SQLite in OUT/study.db (an absolute path, so that a worker
    started from another directory finds the same file)."""
    return given or f"sqlite:///{(Path(out) / STUDY_FILE).resolve()}"


def shown_url(url: str) -> str:
    """``url`` as messages and tables show it: without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: shown as given, for the message about it
        return url


def open_storage(url: str) -> Any:
    """Optuna's storage at ``url``; one line (a ValueError) when it cannot be opened."""
    optuna = optuna_module()
    # SQLite lets one writer at a time: the others wait for it rather than fail
    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as err:  # SQLAlchemy's errors: a bad URL, a missing driver, no server
        reason = " ".join(str(err).split("\n")[0].split()) or type(err).__name__
        raise ValueError(f"--storage {shown_url(url)}: cannot open the study ({reason})") from None


def make_sampler(kind: str, seed: int) -> Any:
    """Optuna's TPE (with the constant liar, for workers that run at once) or random
    sampler, seeded."""
    optuna = optuna_module()
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():  # constant_liar was experimental before Optuna 4
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(kind: str) -> Any:
    """Optuna's median pruner (with its defaults: none before 5 trials are done) or none."""
    optuna = optuna_module()
    return optuna.pruners.MedianPruner() if kind == "median" else optuna.pruners.NopPruner()


def trial_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial ``number``: the trials of a seeded study draw the same
    settings whichever worker runs them."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def open_study(
    storage: Any, name: str, direction: str, pruner: Any, setup: Mapping[str, Any]
) -> Any:
    """The study ``name`` (made if new); ``setup`` (JSON) is what it searches, recorded by its
    first worker and compared by the others."""
    optuna = optuna_module()
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, pruner=pruner, load_if_exists=True
    )
    saved = study.user_attrs.get(SETUP)
    if saved is None:
        study.set_user_attr(SETUP, dict(setup))
    elif saved != setup:
        changed = [k for k in sorted(set(saved) | set(setup)) if saved.get(k) != setup.get(k)]
        raise ValueError(
            f"the study {name!r} was made with other settings ({', '.join(changed)} differ): "
            "run it with its own, or choose another --study-name"
        )
    return study


def load_study(storage: Any, name: str) -> Any:
    """The study ``name`` as it is (for a summary); one line when there is none."""
    optuna = optuna_module()
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ValueError(f"no study {name!r} in this storage: run pyro-vae tune first") from None


@contextlib.contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """The workers' lock on OUT/.tune.lock (``flock``: released when its holder exits, however
    it exits): held while a trial is counted and asked for, and while the summary is written."""
    Path(out).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(out) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def reserve_trial(study: Any, trials: int, out: Path, sampler: str, seed: int) -> Any | None:
    """A new trial of ``study`` while it has fewer than ``trials`` (None: it has them all).
    A trial numbered past the total (a worker of the same study writing under another --out,
    whose lock this one does not see) is recorded as failed, marked ``surplus``, and not run."""
    optuna = optuna_module()
    with out_lock(out):
        count = len(study.get_trials(deepcopy=False))
        if count >= trials:
            return None
        study.sampler = make_sampler(sampler, trial_seed(seed, count))
        trial = study.ask()
    if trial.number >= trials:
        trial.set_user_attr("surplus", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return None
    return trial
