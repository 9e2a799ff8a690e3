"""Load a finished (or stopped) run and measure it: ``pyro-vae evaluate RUN_DIR``."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch

from . import runs
from .conditional import with_context
from .config import TrainConfig
from .data import Binarizer, ImageData, load_dataset
from .evaluation import active_units, evaluate_elbo, kl_per_dimension, log_likelihood
from .model import VAE
from .models import build_model
from .training import RunDirectoryError, resolve_device

EVALUATION = "evaluation.json"


@dataclass
class LoadedRun:
    config: TrainConfig
    vae: VAE
    data: ImageData
    test_x: torch.Tensor  # the test images as the run saw them (binarized with the fixed seed)
    epoch: int


def load_run(run_dir: str | Path, device: str = "auto", data: ImageData | None = None) -> LoadedRun:
    """The trained model of ``run_dir`` (from its checkpoint) with its data, on ``device``."""
    run_dir = Path(run_dir)
    try:
        config = TrainConfig.from_dict(json.loads((run_dir / runs.CONFIG).read_text()))
        state = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
    except FileNotFoundError as err:
        raise RunDirectoryError(
            f"{str(run_dir)!r} is not a run directory ({err.filename} is missing)"
        ) from None
    except Exception as err:  # a damaged checkpoint or config
        raise RunDirectoryError(f"cannot read the run in {str(run_dir)!r}: {err}") from None
    dev = resolve_device(device)
    if data is None:
        data = load_dataset(config.dataset, config.data_dir)
    data = with_context(data, config.context).to(dev)
    vae = build_model(data.shape, context_dim=data.context_dim, **config.model_options()).to(dev)
    try:
        vae.load_state_dict(state["model"])
    except RuntimeError as err:
        raise RunDirectoryError(f"the checkpoint does not fit the run's config ({err})") from None
    vae.eval()
    vae.beta = 1.0  # evaluation measures the plain bound
    test_x = Binarizer(config.binarize, data, seed=config.seed).test_x
    return LoadedRun(config, vae, data, test_x, state["position"]["epoch"])


def evaluate_run(
    run_dir: str | Path,
    num_samples: int = 5000,
    device: str = "auto",
    max_images: int | None = None,
    seed: int = 0,
    progress: bool = True,
    data: ImageData | None = None,
) -> dict[str, Any]:
    """Test log p(x) (K = ``num_samples``; 0 skips it), -ELBO, rate, distortion and active
    units; written to RUN_DIR/evaluation.json and returned."""
    run = load_run(run_dir, device, data)
    x = run.test_x
    if max_images is not None and max_images < x.shape[0]:
        # a fixed random subset: test sets are often ordered by class
        pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
        x = x[pick[:max_images].to(x.device)]
    model, guide = run.vae.model, run.vae.guide
    pyro.set_rng_seed(seed)
    t0 = time.perf_counter()
    if num_samples > 0 and not run.config.autoencoder:
        ll = log_likelihood(model, guide, x, num_samples=num_samples, progress=progress)
        log_px, log_px_stderr = ll.mean, ll.mean_stderr
    else:  # not asked for, or undefined (a point-mass encoder is no proposal)
        log_px = log_px_stderr = math.nan
    seconds_ll = time.perf_counter() - t0
    bound = evaluate_elbo(model, guide, x)
    units, activity = active_units(guide, x)
    kl_dims = kl_per_dimension(model, guide, x)
    result = {
        "run": str(run_dir),
        "epoch": run.epoch,
        "num_images": int(x.shape[0]),
        "images": "all test images" if x is run.test_x else "a fixed random subset (seed 0)",
        "num_samples": num_samples,
        "max_images": max_images,
        "test_log_likelihood": log_px,
        "test_log_likelihood_stderr": log_px_stderr,
        "test_neg_elbo": bound.neg_elbo,
        "test_distortion": bound.distortion,
        "test_rate": bound.rate,
        "active_units": units,
        "z_dim": run.config.z_dim,
        "activity_per_dim": [round(float(a), 6) for a in activity],
        "kl_per_dim": None if kl_dims is None else [round(float(k), 6) for k in kl_dims],
        "log_likelihood_seconds": seconds_ll,
        "device": str(x.device),
        "units": "nats per image",
    }
    runs.write_json(Path(run_dir) / EVALUATION, result)
    return result
