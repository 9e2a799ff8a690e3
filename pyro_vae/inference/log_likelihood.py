"""log p(x) per image by importance sampling, with q(z|x) as the proposal.

    log p(x) ~= log (1/K) sum_k w_k,   log w_k = log p(x, z_k) - log q(z_k | x),  z_k ~ q(z|x),

the IWAE_K bound, which converges to log p(x) from below as K grows (Burda et al., 2016,
sec. 5: K = 5000). Computed in memory-bounded chunks of images and particles; a delta-method
standard error comes with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine

from ..progress import Progress
from .traces import is_sample


def _with_particles(fn: Callable, num_particles: int) -> Callable:
    """``fn`` run inside an outer plate of ``num_particles`` (dim -2, left of plate 'data')."""

    def wrapped(*args, **kwargs):
        with pyro.plate("evaluation_particles", num_particles, dim=-2):
            return fn(*args, **kwargs)

    return wrapped


def importance_log_weights(
    model: Callable, guide: Callable, x: torch.Tensor, num_particles: int
) -> torch.Tensor:
    """log w_k = log p(x, z_k) - log q(z_k|x) for K particles per image: shape (K, N).

    Plain log-densities (no beta weights, no masks): these are the weights of log p(x).
    """
    guide_trace = poutine.trace(_with_particles(guide, num_particles)).get_trace(x)
    replayed = poutine.replay(_with_particles(model, num_particles), trace=guide_trace)
    model_trace = poutine.trace(replayed).get_trace(x)
    log_w = x.new_zeros(num_particles, x.shape[0])
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for site in trace.nodes.values():
            if is_sample(site) and (sign > 0 or not site["is_observed"]):
                log_w = log_w + sign * site["fn"].log_prob(site["value"])
    return log_w


@dataclass(frozen=True)
class LogLikelihood:
    """Importance-sampled log p(x) per image (nats) with the delta-method standard error.

    ``per_image`` is log (1/K) sum_k w_k, the IWAE_K bound, which converges to log p(x) from
    below as K grows (Burda et al., 2016, sec. 5: K = 5000). ``stderr`` per image is
    sd(w) / (sqrt(K) mean(w)); ``mean_stderr`` is the standard error of the mean over images.
    """

    per_image: torch.Tensor
    stderr: torch.Tensor
    num_samples: int

    @property
    def mean(self) -> float:
        return float(self.per_image.mean())

    @property
    def mean_stderr(self) -> float:
        return float(self.stderr.pow(2).sum().sqrt() / len(self.stderr))


@torch.no_grad()
def log_likelihood(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_samples: int = 5000,
    batch_size: int = 100,
    particle_batch: int = 500,
    progress: bool = False,
) -> LogLikelihood:
    """log p(x) per image by importance sampling with q(z|x) as proposal, K = ``num_samples``.

    Memory is bounded by ``batch_size * particle_batch`` particles at once (decoder outputs of
    that many images); chunks over particles are combined with logsumexp, so the result equals
    the single-pass estimate. Pyro's ``vectorized_importance_weights(normalized=True)`` raises
    in 1.9.2, and it has no per-datapoint mode, hence this function.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    estimates, stderrs = [], []
    shown = Progress(x.shape[0], f"log p(x), K={num_samples}", "image", enabled=progress)

    def running_mean() -> str:
        done = torch.cat(estimates)
        return f"mean {done.mean():.2f} nats, {len(done) / shown.elapsed:,.1f} images/s"

    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        lse = xb.new_full((xb.shape[0],), -math.inf, dtype=torch.float64)
        lse2 = lse.clone()
        for k0 in range(0, num_samples, particle_batch):
            lw = importance_log_weights(
                model, guide, xb, min(particle_batch, num_samples - k0)
            ).double()
            lse = torch.logaddexp(lse, torch.logsumexp(lw, 0))
            lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * lw, 0))
        K = num_samples
        estimates.append(lse - math.log(K))
        # var(w) / mean(w)^2 from sum w and sum w^2 (sample variance)
        rel_var = (torch.exp(lse2 - 2 * lse) * K - 1) * K / max(K - 1, 1)
        stderrs.append((rel_var.clamp(min=0) / K).sqrt())
        shown.advance(xb.shape[0], running_mean)
    shown.close(running_mean if estimates else None)
    dtype = x.dtype
    return LogLikelihood(torch.cat(estimates).to(dtype), torch.cat(stderrs).to(dtype), num_samples)
