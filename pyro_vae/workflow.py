"""Whole runs from Python, as ``pyro-vae train`` makes them: training with its metrics,
progress and figures. (The training layer trains; figures are the report layer's observer,
added here, above both.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .data import ImageData
from .report import FiguresAtEnd
from .training import Observer, TrainConfig, TrainResult, fit
from .training.run import resumed_config


def train(
    config: TrainConfig | None = None,
    data: ImageData | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    observers: Sequence[Observer] = (),
    **options: Any,
) -> TrainResult:
    """Train a VAE and leave a complete run directory (config, metrics, summary, checkpoint,
    figures) in ``config.out``; ``options`` build the config when none is given::

        result = pyro_vae.train(z_dim=2, epochs=10, out="runs/z2")
        result.vae, result.summary["test_neg_elbo"]

    ``resume`` continues the run in ``out`` from its checkpoint, with its own options: those
    given may only be the ones that can change on resume (``epochs``, ``device``, ...), or
    have the run's values (:func:`~pyro_vae.training.run.resumed_config`, as ``pyro-vae train
    --resume``); ``overwrite`` replaces a run already there (without either, an existing run is
    an error, so nothing is lost). ``observers`` are called by the training loop besides the
    standard ones (metrics.csv, progress, figures)."""
    if config is None:
        config = resumed_config(options) if resume else TrainConfig(**options)
    elif options:
        raise TypeError("give a TrainConfig or options, not both")
    return fit(
        config,
        data,
        resume=resume,
        overwrite=overwrite,
        observers=[*observers, FiguresAtEnd()],
    )
