"""A trained model back from its run directory, with the data it was trained on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import Binarizer, ImageData
from ..model import VAE, build_model
from .assemble import load_data
from .devices import resolve_device
from .options import TrainConfig
from .run_dir import CHECKPOINT, CONFIG, RunDirectoryError, load_checkpoint


@dataclass
class LoadedRun:
    """A run's trained VAE (on its device, in eval mode, beta = 1), its options and data."""

    config: TrainConfig
    vae: VAE
    data: ImageData
    test_x: torch.Tensor  # the test images as the run saw them (binarized with the fixed seed)
    epoch: int


def load_run(run_dir: str | Path, device: str = "auto", data: ImageData | None = None) -> LoadedRun:
    """The trained model of ``run_dir`` (from its checkpoint) with its data, on ``device``
    (``data``: the dataset, if already loaded). The VAE's ``decoder`` returns the likelihood's
    parameters (logits for ``bernoulli``); ``vae.likelihood.mean(vae.decoder(z))`` is E[x|z]."""
    run_dir = Path(run_dir)
    try:
        config = TrainConfig.from_dict(json.loads((run_dir / CONFIG).read_text()))
        state = load_checkpoint(run_dir / CHECKPOINT)
    except FileNotFoundError as err:
        raise RunDirectoryError(
            f"{str(run_dir)!r} is not a run directory ({err.filename} is missing)"
        ) from None
    except Exception as err:  # a damaged checkpoint or config
        raise RunDirectoryError(f"cannot read the run in {str(run_dir)!r}: {err}") from None
    dev = resolve_device(device)
    data = load_data(config, dev, data)
    vae = build_model(data.shape, context_dim=data.context_dim, **config.model_options()).to(dev)
    try:
        vae.load_state_dict(state["model"])
    except RuntimeError as err:
        raise RunDirectoryError(f"the checkpoint does not fit the run's config ({err})") from None
    vae.eval()
    vae.beta = 1.0  # evaluation measures the plain bound
    test_x = Binarizer(config.binarize, data, seed=config.seed).test_x
    return LoadedRun(config, vae, data, test_x, state["position"]["epoch"])
