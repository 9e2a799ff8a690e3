"""A training run from its options: check the directory, assemble the parts, train with the
standard observers (metrics.csv, progress, TensorBoard, the ``--tracker``), and keep the record.

Nothing in the run directory changes until every option, the data and the model have been
checked and the first batch has passed the reference check: a bad ``--seed`` or grey data for
a Bernoulli likelihood leaves an old run untouched even with ``overwrite`` (and a directory
made for a run that fails these checks is removed again). The run holds the directory's lock
(:meth:`RunDirectory.lock`) from its first look at it to its last file, figures included.

Whether a run may resume is decided here, for ``pyro-vae train --resume`` and
``pyro_vae.train(..., resume=True)`` alike: :func:`resumed_config` makes the config a resumed
run continues with from the options asked for, and :func:`check_resumable` holds it against
the checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import ImageData
from ..model import VAE
from .assemble import assemble
from .distributed import launched_rank
from .load import read_config
from .loop import Trainer
from .metrics import metric_fields
from .observers import MetricsCSV, Observer, Progress
from .option_checks import GIVEN_DATA
from .options import ConfigError, TrainConfig, options
from .run_dir import RunDirectory, RunDirectoryError
from .schema import flag_of
from .tensorboard import TensorBoardLog
from .trackers import attach_tracker


@dataclass
class TrainResult:
    vae: VAE
    summary: dict[str, Any]  # empty on processes other than rank 0
    metrics: list[dict[str, float]] = field(default_factory=list)


def resumed_config(given: Mapping[str, Any], how: str = "--plugin") -> TrainConfig:
    """The config a resumed run continues with: the run's own (its config.json, in
    ``given["out"]`` or the default run directory), with the options that may change on resume
    (the ``resumable`` ones: ``epochs``, ``device``, ...) taken from ``given``. Any other option
    given must have the run's value: a resumed run keeps its options. ``how``: the way to
    name the run's plug-ins again, for the message when they are not (``--plugin``,
    ``plugins=[...]``)."""
    out = Path(given.get("out", TrainConfig.out))
    try:
        saved = read_config(out, how)
    except ValueError as err:
        raise RunDirectoryError(f"cannot resume: {err}") from None
    unknown = sorted(set(given) - set(options()))
    if unknown:
        raise TypeError(f"no training option {', '.join(map(repr, unknown))}")
    changed = [  # in the order the options are declared
        k
        for k, opt in options().items()
        if k in given and not opt.resumable and _as_saved(given[k]) != getattr(saved, k)
    ]
    if changed:
        raise ConfigError(
            "a resumed run keeps its options; these differ from the run's: "
            + ", ".join(flag_of(k) for k in changed)
        )
    return dataclasses.replace(saved, **given, **_no_longer_applying(saved, given))


def _no_longer_applying(saved: TrainConfig, given: Mapping[str, Any]) -> dict[str, None]:
    """The run's resumable options, not given, that the ones given make inapplicable (the
    ``--tracking-uri`` of a run resumed with ``--tracker none``): dropped."""
    probe = object.__new__(TrainConfig)
    probe.__dict__.update({**saved.__dict__, **given})
    return {
        k: None
        for k, opt in options().items()
        if opt.resumable and k not in given and not probe.applies(k)
    }


def _as_saved(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def check_resumable(config: TrainConfig, state: dict[str, Any]) -> None:
    """A run continues only with the options it was started with (``epochs`` may grow): the
    config against the one its checkpoint ``state`` was made with."""
    try:
        saved = TrainConfig.from_dict(state["config"])
    except (ValueError, TypeError) as err:
        raise RunDirectoryError(f"the checkpoint's config is unreadable ({err})") from None
    differences = config.differences(saved)
    if differences:
        raise RunDirectoryError(
            "the checkpoint was made with another config ("
            + "; ".join(differences)
            + "): resume with the run's own options, or start a new run"
        )
    done = state["position"]["epoch"]
    if done > config.epochs:
        raise ConfigError(f"--epochs {config.epochs} is less than the {done} epochs done")


def as_given(config: TrainConfig, data: Any) -> TrainConfig:
    """The config of a run on ``data`` passed from Python: its dataset is ``given`` (so that
    a command reading the run asks for the data again rather than loading a built-in set),
    unless ``data`` is the named dataset itself, already loaded (``ImageData.name``)."""
    if data is None or config.dataset == GIVEN_DATA:
        return config
    if isinstance(data, ImageData) and data.name == config.dataset:
        return config
    return dataclasses.replace(config, dataset=GIVEN_DATA, data_dir=None)


def fit(
    config: TrainConfig,
    data: ImageData | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    observers: Sequence[Observer] = (),
    vae: VAE | None = None,
) -> TrainResult:
    """Train a VAE as ``config`` says and leave a complete run directory in ``config.out``
    (figures come from an observer: :func:`pyro_vae.train` adds them); ``vae``: the model
    given from Python, for a config whose ``model`` is ``"given"``.

    ``resume`` continues the run in ``config.out`` from its checkpoint; ``overwrite`` replaces
    a run already there (without either, an existing run is an error, so nothing is lost).
    """
    config = as_given(config, data)
    run_dir = RunDirectory(config.out, writes=launched_rank() == 0)
    # held from the first look at the directory: a second writer is turned away at once, and
    # nothing can change the run between the checks below and the first write
    with run_dir.lock("train"):
        saved = None
        if resume:
            saved = run_dir.saved_state()
            check_resumable(config, saved)
        elif not overwrite:
            run_dir.refuse_to_clobber()
        # before the data is read: a tracker out of reach stops here (--tracker-errors stop)
        tracker = attach_tracker(config, run_dir, resume) if run_dir.writes else None
        parts = assemble(config, data, vae)
        if not resume:  # the record of the data it read goes into config.json
            parts.config = config = dataclasses.replace(config, data_source=parts.run_data.record)
        standard: list[Observer] = [MetricsCSV(run_dir)]
        if config.progress:
            standard.append(Progress())
        if config.tensorboard:
            standard.append(TensorBoardLog(run_dir.path))
        # the tracker comes last: it sends what the others (the figures) have written
        trackers = [tracker] if tracker is not None else []
        trainer = Trainer(parts, run_dir, [*standard, *observers, *trackers], saved)
        if overwrite and not resume:
            run_dir.clear()  # only now: options, data, model and first batch have passed
        run_dir.start(config.as_dict(), metric_fields(parts.vae), trainer.metrics)
        summary = trainer.fit()
    return TrainResult(parts.vae, summary, trainer.metrics)
