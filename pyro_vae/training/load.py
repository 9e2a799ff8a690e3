"""A trained model back from its run directory, with the data it was trained on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import Binarizer, ImageData
from ..model import VAE, build_model
from .assemble import load_data
from .checkpoint import CheckpointError, load_checkpoint
from .devices import resolve_device
from .options import TrainConfig
from .run_dir import CHECKPOINT, CLEARING, CONFIG, RunDirectory, RunDirectoryError


@dataclass
class LoadedRun:
    """A run's trained VAE (on its device, in eval mode, beta = 1), its options and data."""

    config: TrainConfig
    vae: VAE
    data: ImageData
    test_x: torch.Tensor  # the test images as the run saw them (binarized with the fixed seed)
    epoch: int


def read_config(run_dir: str | Path) -> TrainConfig:
    """RUN_DIR/config.json, parsed against the options schema; one line if it cannot be."""
    path = Path(run_dir) / CONFIG
    if (Path(run_dir) / CLEARING).exists():
        raise RunDirectoryError(
            f"{str(run_dir)!r} was part-way through being replaced (--overwrite) when that "
            "command stopped: run it again"
        )
    if not path.is_file():
        raise RunDirectoryError(f"{str(run_dir)!r} is not a run directory (no {CONFIG})")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, UnicodeDecodeError) as err:
        raise RunDirectoryError(f"{str(path)!r} is not a run's config ({err})") from None


def load_run(run_dir: str | Path, device: str = "auto", data: ImageData | None = None) -> LoadedRun:
    """The trained model of ``run_dir`` (from its checkpoint) with its data, on ``device``
    (``data``: the dataset, if already loaded). The VAE's ``decoder`` returns the likelihood's
    parameters (logits for ``bernoulli``); ``vae.likelihood.mean(vae.decoder(z))`` is E[x|z]."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    try:
        state = load_checkpoint(run_dir / CHECKPOINT)
        epoch = int(state["position"]["epoch"])
    except FileNotFoundError:
        raise RunDirectoryError(
            f"{str(run_dir)!r} holds no trained model yet (no {CHECKPOINT})"
        ) from None
    except CheckpointError as err:
        raise RunDirectoryError(f"{err}{RunDirectory(run_dir).offer_previous()}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise RunDirectoryError(f"cannot read the run in {str(run_dir)!r}: {err}") from None
    dev = resolve_device(device)
    data = load_data(config, dev, data)
    vae = build_model(data.shape, context_dim=data.context_dim, **config.model_options()).to(dev)
    try:
        vae.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as err:
        raise RunDirectoryError(f"the checkpoint does not fit the run's config ({err})") from None
    vae.eval()
    vae.beta = 1.0  # evaluation measures the plain bound
    test_x = Binarizer(config.binarize, data, seed=config.seed).test_x
    return LoadedRun(config, vae, data, test_x, epoch)
