"""A trained model back from its run directory, with the data it was trained on."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import Binarizer, DataError, ImageData
from ..model import VAE
from .assemble import load_data, model_of
from .checkpoint import CheckpointError, load_checkpoint
from .devices import resolve_device
from .options import ConfigError, TrainConfig
from .run_dir import CLEARING, CONFIG, RunDirectory, RunDirectoryError, find_checkpoint
from .user_code import check_recorded, prepare_reading


@dataclass
class LoadedRun:
    """A run's trained VAE (on its device, in eval mode, beta = 1), its options and data."""

    config: TrainConfig
    vae: VAE
    data: ImageData
    test_x: torch.Tensor  # the test images as the run saw them (binarized with the fixed seed;
    # LazyRows, read a batch at a time, for a run that streamed its data)
    epoch: int


def read_config(run_dir: str | Path, how: str = "--plugin") -> TrainConfig:
    """RUN_DIR/config.json, parsed against the options schema; one line if it cannot be.

    A run made with the user's own modules is read only when they were named again or are
    installed entry points (``how``: the way to name them, for the message); nothing the
    config names is imported (:func:`~pyro_vae.training.user_code.check_recorded`)."""
    path = Path(run_dir) / CONFIG
    if (Path(run_dir) / CLEARING).exists():
        raise RunDirectoryError(
            f"{str(run_dir)!r} was part-way through being replaced (--overwrite) when that "
            "command stopped: run it again"
        )
    if not path.is_file():
        raise RunDirectoryError(f"{str(run_dir)!r} is not a run directory (no {CONFIG})")
    try:
        saved = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise RunDirectoryError(f"{str(path)!r} is not a run's config ({err})") from None
    if isinstance(saved, dict):
        check_recorded(saved, how)
    try:
        return TrainConfig.from_dict(saved)
    except (ValueError, TypeError) as err:
        raise RunDirectoryError(f"{str(path)!r} is not a run's config ({err})") from None


def load_run(
    run_dir: str | Path,
    device: str = "auto",
    data: ImageData | None = None,
    *,
    vae: VAE | None = None,
    plugins: Sequence[str] = (),
) -> LoadedRun:
    """The trained model of ``run_dir`` (from its checkpoint) with its data, on ``device``
    (``data``: the dataset, if already loaded). The VAE's ``decoder`` returns the likelihood's
    parameters (logits for ``bernoulli``); ``vae.likelihood.mean(vae.decoder(z))`` is E[x|z].

    A run of your own code is read with it named again: ``plugins`` (the modules that
    registered its parts, or the ``MODULE`` of its ``--model MODULE:FACTORY``), or ``vae``
    (the model given to ``train(vae=...)``, whose weights are then replaced by the run's).
    Weights are read without unpickling anything."""
    run_dir = Path(run_dir)
    prepare_reading(plugins)
    config = read_config(run_dir, how="plugins=[...]")
    try:
        state = load_checkpoint(find_checkpoint(run_dir))
        epoch = int(state["position"]["epoch"])
    except FileNotFoundError:
        raise RunDirectoryError(
            f"{str(run_dir)!r} holds no trained model yet (no {find_checkpoint(run_dir).name})"
        ) from None
    except CheckpointError as err:
        raise RunDirectoryError(f"{err}{RunDirectory(run_dir).offer_previous()}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise RunDirectoryError(f"cannot read the run in {str(run_dir)!r}: {err}") from None
    dev = resolve_device(device)
    try:
        run_data = load_data(config, dev, data, vae)
    except DataError as err:
        raise RunDirectoryError(str(err)) from None
    data = run_data.data
    try:
        vae = model_of(config, data, vae).to(dev)
    except ConfigError as err:
        raise RunDirectoryError(str(err)) from None
    try:
        vae.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as err:
        raise RunDirectoryError(f"the checkpoint does not fit the run's config ({err})") from None
    vae.eval()
    vae.beta = 1.0  # evaluation measures the plain bound
    if run_data.streamed:  # read a batch at a time, binarized with the fixed seed as in training
        test_x = data.test_x
    else:
        test_x = Binarizer(config.binarize, data, seed=config.seed).test_x
    return LoadedRun(config, vae, data, test_x, epoch)
