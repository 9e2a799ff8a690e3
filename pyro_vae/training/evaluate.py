"""Measuring a trained run: ``pyro-vae evaluate RUN_DIR`` writes RUN_DIR/evaluation.json.

Three ways to estimate test log p(x) (``method``), each kept in evaluation.json beside the
others made at the same epoch on the same images:

- ``is``: importance sampling with q(z|x), K samples (the IWAE_K bound; Burda et al., 2016);
  top-level keys ``test_log_likelihood``, ``test_log_likelihood_stderr``, ``num_samples``.
- ``ais``: annealed importance sampling with HMC (Neal, 2001; Wu et al., 2017), tighter when
  q(z|x) is far from the posterior; the block ``ais``.
- ``bdmc``: on images simulated from the trained model, forward AIS (a lower bound) and reverse
  AIS from the exact posterior sample (an upper bound; Grosse et al., 2015): how far AIS with
  these settings can be from log p(x) for this model; the block ``bdmc``.

For a likelihood of 8-bit data (``discretized-logistic``, a probability mass over the 256
levels) each estimate also comes in bits per dimension (:func:`~pyro_vae.inference.bits.
bits_per_dim`): ``test_bits_per_dim`` beside ``test_neg_elbo``,
``test_log_likelihood_bits_per_dim`` beside ``test_log_likelihood``, and ``bits_per_dim`` in
the block ``ais``. A density on grey levels gets none (it is fitted to k / 255, not to
dequantized levels).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from ..data import ImageData
from ..inference import active_units, evaluate_elbo, kl_per_dimension, log_likelihood
from ..inference.ais import ais_log_likelihood, effective_sample_size
from ..inference.annealing import AnnealingSettings
from ..inference.bdmc import bdmc, simulate
from ..inference.bits import bits_per_dim
from ..model import JointVAE
from ..model.discretized_logistic import eight_bit_values
from .denormals import flushed_denormals
from .load import LoadedRun, load_run, read_config
from .run_dir import EVALUATION, RunDirectory, write_json
from .tensorboard import log_evaluation

METHODS = ("is", "ais", "bdmc")
# Particles (images x K) from which importance sampling compiles its chunks by default: the
# compilation (20-40 s on a 2-core CPU, less from Inductor's cache) is repaid from about
# 200 test images at K = 5000 (docs/speed.md, "Evaluation").
COMPILE_FROM = 1_000_000


def annealing_record(settings: AnnealingSettings, method: str) -> dict[str, Any]:
    """The settings as evaluation.json's block of ``method`` (ais, bdmc) records them: those
    that change the estimate, under the names ``pyro-vae evaluate`` prints."""
    record = {
        "steps": settings.num_steps,
        "chains": settings.chains,
        "leapfrog": settings.leapfrog_steps,
        "initial": settings.initial,
        "schedule": settings.schedule,
        "step_size": settings.step_size,
        "target_accept": settings.target_accept,
    }
    return record | ({"simulated": settings.simulated} if method == "bdmc" else {})


def evaluate_run(
    run_dir: str | Path,
    num_samples: int = 5000,
    device: str = "auto",
    max_images: int | None = None,
    seed: int = 0,
    progress: bool = True,
    data: ImageData | None = None,
    method: str = "is",
    annealing: AnnealingSettings | None = None,
    compile: bool | None = None,
) -> dict[str, Any]:
    """Test log p(x) by ``method`` (is: K = ``num_samples``, 0 skips it; ais; bdmc, with the
    ``annealing`` settings, by default :class:`AnnealingSettings`'s), -ELBO, rate, distortion
    and active units; written to RUN_DIR/evaluation.json, keeping what an earlier evaluation
    of the same epoch and images measured by another method, and returned.
    ``compile``: importance sampling runs compiled chunks (None: when the images x K particles
    repay the compilation, see :data:`COMPILE_FROM`). Holds the run directory's lock
    throughout (a run still training is refused)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if num_samples < 0:
        raise ValueError(f"the number of importance samples must be >= 0, got {num_samples}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"--max-images must be >= 1 (or left out for all), got {max_images}")
    read_config(run_dir)  # a directory that holds no run gets no lock file
    with RunDirectory(run_dir).lock("evaluate"), contextlib.ExitStack() as mode:
        run = load_run(run_dir, device, data)
        mode.enter_context(flushed_denormals(run.config.denormals == "flush"))  # as it trained
        x = _images(run, max_images)
        pyro.set_rng_seed(seed)
        if method == "is":
            measured = _importance_sampling(run, x, num_samples, progress, compile)
        else:
            if run.config.autoencoder:
                raise ValueError(f"--method {method} needs a VAE: an autoencoder has no q(z|x)")
            measure = _ais if method == "ais" else _bdmc
            measured = {method: measure(run, x, annealing or AnnealingSettings(), seed, progress)}
        pyro.set_rng_seed(seed)  # the same -ELBO whichever method ran before it
        result = {
            "run": str(run_dir),
            **_earlier(Path(run_dir), run.epoch, max_images),
            **_common(run, x, max_images),
            **measured,
        }
        write_json(Path(run_dir) / EVALUATION, result)
        log_evaluation(Path(run_dir), run.epoch, result)
    return result


def _bits(run: LoadedRun, neg_log_p: float) -> float | None:
    """``neg_log_p`` (nats per image) in bits per dimension, for a likelihood of 8-bit data;
    None for any other (or for an estimate that was not made)."""
    values = eight_bit_values(getattr(run.vae, "likelihood", None))
    if values is None or not math.isfinite(neg_log_p):
        return None
    return bits_per_dim(neg_log_p, values, discrete=True)


def _with_bits(key: str, bits: float | None) -> dict[str, float]:
    return {} if bits is None else {key: bits}


def _images(run: LoadedRun, max_images: int | None) -> torch.Tensor:
    x = run.test_x
    if max_images is not None and max_images < x.shape[0]:
        # a fixed random subset: test sets are often ordered by class
        pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
        x = x[pick[:max_images].to(x.device)]
    return x


def _earlier(run_dir: Path, epoch: int, max_images: int | None) -> dict[str, Any]:
    """What evaluation.json holds for the same epoch and images (another method's numbers)."""
    path = run_dir / EVALUATION
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict):
        return {}
    if saved.get("epoch") != epoch or saved.get("max_images") != max_images:
        return {}
    return saved


STREAMED_UNIT_ROWS = 10_000  # test rows of a streamed run its active units are measured on


def _common(run: LoadedRun, x: torch.Tensor, max_images: int | None) -> dict[str, Any]:
    """The measures every method reports: -ELBO, rate, distortion, active units."""
    model, guide = run.vae.model, run.vae.guide
    bound = evaluate_elbo(model, guide, x)
    # streamed test rows (LazyRows): the per-dimension measures take one batch of them at once
    held = x if isinstance(x, torch.Tensor) else x[:STREAMED_UNIT_ROWS]
    units, activity = active_units(run.vae.code_guide, held)
    kl_dims = kl_per_dimension(model, run.vae.code_guide, held)
    return {
        "epoch": run.epoch,
        "num_images": int(x.shape[0]),
        "images": "all test images" if x is run.test_x else "a fixed random subset (seed 0)",
        "max_images": max_images,
        "test_neg_elbo": bound.neg_elbo,
        **_with_bits("test_bits_per_dim", _bits(run, bound.neg_elbo)),
        "test_distortion": bound.distortion,
        "test_rate": bound.rate,
        "active_units": units,
        "z_dim": run.config.z_dim,
        "activity_per_dim": [round(float(a), 6) for a in activity],
        "kl_per_dim": None if kl_dims is None else [round(float(k), 6) for k in kl_dims],
        "device": str(x.device),
        "units": "nats per image",
    }


def _importance_sampling(
    run: LoadedRun, x: torch.Tensor, num_samples: int, progress: bool, compile: bool | None
) -> dict[str, Any]:
    t0 = time.perf_counter()
    if compile is None:  # (a class site's draw reads tensor values: no fixed graph)
        compile = x.shape[0] * num_samples >= COMPILE_FROM and not isinstance(run.vae, JointVAE)
    if num_samples > 0 and not run.config.autoencoder:
        ll = log_likelihood(
            run.vae.model, run.vae.guide, x, num_samples, progress=progress, compile=compile
        )
        log_px, log_px_stderr = ll.mean, ll.mean_stderr
    else:  # not asked for, or undefined (a point-mass encoder is no proposal)
        log_px = log_px_stderr = math.nan
    return {
        "num_samples": num_samples,
        "test_log_likelihood": log_px,
        "test_log_likelihood_stderr": log_px_stderr,
        **_with_bits("test_log_likelihood_bits_per_dim", _bits(run, -log_px)),
        "log_likelihood_seconds": time.perf_counter() - t0,
        "compiled": compile,
    }


def _ais(
    run: LoadedRun, x: torch.Tensor, settings: AnnealingSettings, seed: int, progress: bool
) -> dict[str, Any]:
    """AIS log p(x) of the test images: the mean, its standard error over images, the chains'
    effective sample size and the HMC acceptance rate."""
    t0 = time.perf_counter()
    result = ais_log_likelihood(
        run.vae.model, run.vae.guide, x, **settings.run_options(), progress=progress
    )
    seconds = time.perf_counter() - t0
    return {
        **annealing_record(settings, "ais"),
        "transitions": result.transitions,
        "seed": seed,
        "test_log_likelihood": result.mean,
        "test_log_likelihood_stderr": _monte_carlo_stderr(result.log_weights),
        **_with_bits("bits_per_dim", _bits(run, -result.mean)),
        "ess_mean": float(result.ess.mean()),
        "acceptance_mean": float(result.acceptance.mean()),
        "seconds": seconds,
        "images_per_second": x.shape[0] / seconds,
    }


def _bdmc(
    run: LoadedRun, x: torch.Tensor, settings: AnnealingSettings, seed: int, progress: bool
) -> dict[str, Any]:
    """BDMC on ``settings.simulated`` images simulated from the trained model (rows shaped as
    the test images): the mean lower and upper bounds and the mean gap between them."""
    latents, simulated = simulate(run.vae.model, settings.simulated, x)
    t0 = time.perf_counter()
    result = bdmc(
        run.vae.model,
        run.vae.guide,
        simulated,
        latents,
        **settings.run_options(),
        progress=progress,
    )
    seconds = time.perf_counter() - t0
    return {
        **annealing_record(settings, "bdmc"),
        "transitions": result.forward.transitions,
        "seed": seed,
        "lower": result.mean_lower,
        "upper": result.mean_upper,
        "gap": result.mean_gap,
        "gap_max": float(result.gap.max()),
        "seconds": seconds,
        "images_per_second": simulated.shape[0] / seconds,
    }


def _monte_carlo_stderr(log_weights: torch.Tensor) -> float:
    """The Monte Carlo standard error of the mean over images of log mean_c w_c, by the delta
    method as for importance sampling: per image sd(w) / (sqrt(C) mean(w)), from the chains'
    log weights (C, N). With ESS = (sum w)^2 / sum w^2, var(w) / mean(w)^2 = (C / ESS - 1)
    C / (C - 1)."""
    chains = log_weights.shape[0]
    if chains < 2:
        return math.nan
    ess = effective_sample_size(log_weights.double())
    rel_var = ((chains / ess - 1) * chains / (chains - 1)).clamp(min=0)
    per_image = (rel_var / chains).sqrt()
    return float(per_image.pow(2).sum().sqrt() / per_image.numel())


def _in_bits(r: dict, key: str) -> str:
    """The bits per dimension ``r`` holds at ``key`` as text to follow nats, or "" (none: the
    likelihood is not one of 8-bit data)."""
    return f", {r[key]:.4f} bits/dim" if key in r else ""


def evaluation_line(r: dict, method: str) -> str:
    """The one line ``pyro-vae evaluate`` prints for ``method`` (bits per dimension beside
    the nats where the run's likelihood is one of 8-bit data)."""
    elbo = f"test -ELBO {r['test_neg_elbo']:.2f}{_in_bits(r, 'test_bits_per_dim')}"
    tail = f"{elbo}; active units {r['active_units']}/{r['z_dim']}"
    if method == "is":
        return (
            f"test log p(x) {r['test_log_likelihood']:.2f} +- "
            f"{r['test_log_likelihood_stderr']:.2f} nats"
            f"{_in_bits(r, 'test_log_likelihood_bits_per_dim')} (IS, K={r['num_samples']}, "
            f"{r['num_images']} images, {r['log_likelihood_seconds']:.1f} s); {tail}"
        )
    m = r[method]
    setting = f"T={m['steps']}, {m['chains']} chains, {m['leapfrog']} leapfrog steps"
    if method == "ais":
        line = (
            f"test log p(x) {m['test_log_likelihood']:.2f} +- "
            f"{m['test_log_likelihood_stderr']:.2f} nats{_in_bits(m, 'bits_per_dim')} "
            f"(AIS, {setting}, {r['num_images']} "
            f"images, {m['seconds']:.1f} s; ESS {m['ess_mean']:.1f}/{m['chains']}, "
            f"acceptance {m['acceptance_mean']:.2f})"
        )
        if "test_log_likelihood" in r:
            line += f"; IS, K={r['num_samples']}: {r['test_log_likelihood']:.2f}"
        return f"{line}; {tail}"
    return (
        f"BDMC on {m['simulated']} images simulated from the model ({setting}, "
        f"{m['seconds']:.1f} s): log p(x) between {m['lower']:.2f} (forward AIS) and "
        f"{m['upper']:.2f} (reverse AIS), gap {m['gap']:.3f} nats (largest {m['gap_max']:.3f})"
    )
