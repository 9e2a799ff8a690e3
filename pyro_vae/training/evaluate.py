"""Measuring a trained run: ``pyro-vae evaluate RUN_DIR`` writes RUN_DIR/evaluation.json."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from ..data import ImageData
from ..inference import active_units, evaluate_elbo, kl_per_dimension, log_likelihood
from .load import LoadedRun, load_run, read_config
from .run_dir import EVALUATION, RunDirectory, write_json
from .tensorboard import log_evaluation


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
    units; written to RUN_DIR/evaluation.json and returned. Holds the run directory's lock
    throughout (a run still training is refused)."""
    if num_samples < 0:
        raise ValueError(f"the number of importance samples must be >= 0, got {num_samples}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"--max-images must be >= 1 (or left out for all), got {max_images}")
    read_config(run_dir)  # a directory that holds no run gets no lock file
    with RunDirectory(run_dir).lock("evaluate"):
        run = load_run(run_dir, device, data)
        result = {"run": str(run_dir), **_evaluate(run, num_samples, max_images, seed, progress)}
        write_json(Path(run_dir) / EVALUATION, result)
        log_evaluation(Path(run_dir), run.epoch, result)
    return result


def _evaluate(
    run: LoadedRun, num_samples: int, max_images: int | None, seed: int, progress: bool
) -> dict[str, Any]:
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
    return {
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
