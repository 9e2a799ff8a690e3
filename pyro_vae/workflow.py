"""Whole runs from Python, as ``pyro-vae train`` makes them: training with its metrics,
progress and figures. (The training layer trains; figures are the report layer's observer,
added here, above both.)"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .data import ImageData
from .model import VAE, as_vae
from .report import FiguresAtEnd
from .training import Observer, TrainConfig, TrainResult, fit
from .training.run import resumed_config
from .training.user_code import given_model_options, prepare_training, with_code_record


def train(
    config: TrainConfig | None = None,
    data: ImageData | Any = None,
    *,
    vae: VAE | tuple | object | None = None,
    plugins: Sequence[str] = (),
    resume: bool = False,
    overwrite: bool = False,
    observers: Sequence[Observer] = (),
    **options: Any,
) -> TrainResult:
    """Train a VAE and leave a complete run directory (config, metrics, summary, checkpoint,
    figures) in ``config.out``; ``options`` build the config when none is given::

        result = pyro_vae.train(z_dim=2, epochs=10, out="runs/z2")
        result.vae, result.summary["test_neg_elbo"]

    Your own model enters three ways, and gets the whole pipeline (checkpoints, resume,
    metrics, figures, the first-batch check, ``evaluate``) as ours does:

    - ``vae=``: any :class:`~pyro_vae.VAE`: ours, a subclass that rewrites ``model`` /
      ``guide``, or one built with your own networks (``build_vae(..., encoder=...,
      decoder=...)``); its options are the ones it was built with (``beta`` and the run's
      options still apply; beta weights its latent sites through a handler); or a bare
      Pyro ``(model, guide)`` pair (:class:`~pyro_vae.PyroProgram`: every part that needs no
      decoder);
    - ``model="MODULE:FACTORY"``: ``FACTORY(data_shape, **options)`` builds it, its
      keyword-only parameters being options like the families' (``plugins`` are imported
      first);
    - ``plugins=["my_parts.py"]``: modules that register likelihoods, priors, guides,
      networks or estimators under names the options then choose, with the parts' own options
      (``df=3.0``) given like any other.

    ``data=``: your data by path (``"cells.h5ad"``, docs/data.md), or in memory (recorded as
    given): ImageData, rows as a tensor or array, a (train, test) pair, AnnData, a Dataset.
    ``resume`` continues the run in ``out`` from its checkpoint, with its own options: those
    given may only be the ones that can change on resume (``epochs``, ``device``, ...), or
    have the run's values (:func:`~pyro_vae.training.run.resumed_config`, as ``pyro-vae train
    --resume``); ``overwrite`` replaces a run already there (without either, an existing run is
    an error, so nothing is lost). ``observers`` are called by the training loop besides the
    standard ones (metrics.csv, progress, figures)."""
    options, data = _data_by_path(config, data, options)
    if config is not None and options:
        raise TypeError("give a TrainConfig or options, not both")
    prepare_training(plugins, options.get("model") if config is None else config.model)
    if vae is not None:
        vae = as_vae(vae)  # (a bare model/guide pair becomes a PyroProgram)
    if config is None:
        if vae is not None and not resume:
            options = given_model_options(vae, options)
        config = resumed_config(options, "plugins=[...]") if resume else TrainConfig.of(**options)
    if not resume:
        config = with_code_record(config)
    figures = [*observers, FiguresAtEnd()]
    return fit(config, data, resume=resume, overwrite=overwrite, observers=figures, vae=vae)


def _data_by_path(
    config: TrainConfig | None, data: Any, options: dict[str, Any]
) -> tuple[dict[str, Any], Any]:
    """A path given as ``data`` is the ``--data`` option (read by path), not data in memory."""
    if not isinstance(data, (str, os.PathLike)):
        return options, data
    if config is not None:
        raise TypeError("give the data's path in the TrainConfig (data=...)")
    return {**options, "data": os.fspath(data)}, None
