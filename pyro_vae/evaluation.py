"""Evaluating a trained model: ELBO, importance-sampled log p(x), active units, in nats.

Works on any Pyro ``model(x)`` / ``guide(x)`` pair whose sites live in ``plate("data")``:
the guide is traced, the model replayed against it, and every site's log-density taken
*without* the scale and mask handlers put on it, so the number is the plain (beta = 1) bound

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))

with the KL in closed form where torch has one, else estimated at the sampled z
(log q(z|x) - log p(z)). ``distortion = -E_q[log p(x|z)]`` and ``rate = KL`` (Alemi et al.,
2018) are reported beside it.

``log_likelihood`` estimates log p(x) per image with K importance samples from q (the IWAE_K
bound, K = 5000 as in Burda et al., 2016), in memory-bounded chunks. ``active_units`` counts
latent dimensions whose posterior mean varies across the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence
from tqdm.auto import tqdm


def _is_sample(site: dict) -> bool:
    """A sample site proper (plates record their subsample as a 'sample' site too)."""
    return site["type"] == "sample" and not site_is_subsample(site)


@dataclass(frozen=True)
class ElboTerms:
    """Per-image means over a dataset, in nats."""

    neg_elbo: float
    distortion: float
    rate: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}neg_elbo": self.neg_elbo,
            f"{prefix}distortion": self.distortion,
            f"{prefix}rate": self.rate,
        }


def elbo_terms_per_image(
    model: Callable, guide: Callable, x: torch.Tensor, analytic_kl: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(x|z), KL) per image for one z ~ q(z|x) per image; shapes (N,)."""
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    latent = [s for s in guide_trace.nodes.values() if _is_sample(s) and not s["is_observed"]]
    # per-site analytic KLs are exact only when no latent's model parents depend on it in the
    # guide (TraceMeanField_ELBO's condition); with several layers use the Monte Carlo estimate
    analytic_kl = analytic_kl and len(latent) == 1
    log_lik = x.new_zeros(x.shape[0])
    kl = x.new_zeros(x.shape[0])
    for name, site in model_trace.nodes.items():
        if not _is_sample(site):
            continue
        if site["is_observed"]:
            log_lik = log_lik + site["fn"].log_prob(site["value"])
            continue
        q = guide_trace.nodes[name]["fn"]
        if isinstance(getattr(q, "base_dist", q), dist.Delta):
            # a point mass has no density against p(z): the KL, hence the ELBO, is undefined
            kl = kl + math.nan
            continue
        try:
            if not analytic_kl:
                raise NotImplementedError
            kl = kl + kl_divergence(q, site["fn"])
        except NotImplementedError:
            kl = kl + q.log_prob(site["value"]) - site["fn"].log_prob(site["value"])
    return log_lik, kl


@torch.no_grad()
def evaluate_elbo(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    batch_size: int = 1000,
    analytic_kl: bool = True,
) -> ElboTerms:
    """Mean -ELBO, distortion and rate per image over ``x``, in batches of ``batch_size``."""
    log_lik_sum = x.new_zeros((), dtype=torch.float64)
    kl_sum = x.new_zeros((), dtype=torch.float64)
    for start in range(0, x.shape[0], batch_size):
        log_lik, kl = elbo_terms_per_image(model, guide, x[start : start + batch_size], analytic_kl)
        log_lik_sum += log_lik.sum().double()
        kl_sum += kl.sum().double()
    n = x.shape[0]
    distortion, rate = -log_lik_sum.item() / n, kl_sum.item() / n
    return ElboTerms(neg_elbo=distortion + rate, distortion=distortion, rate=rate)


def _with_particles(fn: Callable, num_particles: int) -> Callable:
    """``fn`` run inside an outer plate of ``num_particles`` (dim -2, left of plate 'data')."""

    def wrapped(*args, **kwargs):
        with pyro.plate("evaluation_particles", num_particles, dim=-2):
            return fn(*args, **kwargs)

    return wrapped


def log_weights(model: Callable, guide: Callable, x: torch.Tensor, num_particles: int):
    """log w_k = log p(x, z_k) - log q(z_k|x) for K particles per image: shape (K, N).

    Plain log-densities (no beta weights, no masks): these are the weights of log p(x).
    """
    guide_trace = poutine.trace(_with_particles(guide, num_particles)).get_trace(x)
    replayed = poutine.replay(_with_particles(model, num_particles), trace=guide_trace)
    model_trace = poutine.trace(replayed).get_trace(x)
    log_w = x.new_zeros(num_particles, x.shape[0])
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for site in trace.nodes.values():
            if _is_sample(site) and (sign > 0 or not site["is_observed"]):
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
    starts = range(0, x.shape[0], batch_size)
    for start in tqdm(starts, desc="log p(x)", unit="batch", disable=not progress):
        xb = x[start : start + batch_size]
        lse = xb.new_full((xb.shape[0],), -math.inf, dtype=torch.float64)
        lse2 = lse.clone()
        for k0 in range(0, num_samples, particle_batch):
            lw = log_weights(model, guide, xb, min(particle_batch, num_samples - k0)).double()
            lse = torch.logaddexp(lse, torch.logsumexp(lw, 0))
            lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * lw, 0))
        K = num_samples
        estimates.append(lse - math.log(K))
        # var(w) / mean(w)^2 from sum w and sum w^2 (sample variance)
        rel_var = (torch.exp(lse2 - 2 * lse) * K - 1) * K / max(K - 1, 1)
        stderrs.append((rel_var.clamp(min=0) / K).sqrt())
    dtype = x.dtype
    return LogLikelihood(torch.cat(estimates).to(dtype), torch.cat(stderrs).to(dtype), num_samples)


@torch.no_grad()
def posterior_means(guide: Callable, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """E_q[z | x] per image, shape (N, z_dim) (the guide's single latent site)."""
    means = []
    for start in range(0, x.shape[0], batch_size):
        trace = poutine.trace(guide).get_trace(x[start : start + batch_size])
        latent = [s for s in trace.nodes.values() if _is_sample(s) and not s["is_observed"]]
        if not latent:
            raise ValueError("posterior_means needs a guide with a latent site")
        # several layers: the first one the guide samples, the one next to the data
        means.append(_mean(latent[0]["fn"], x.device))
    return torch.cat(means)


MC_MEAN_SAMPLES = 256


def _mean(q: torch.distributions.Distribution, device: torch.device) -> torch.Tensor:
    """E_q[z]: exact where the family has it, else an average of MC_MEAN_SAMPLES draws (a flow
    guide), with a fixed seed so that figures and activity statistics are reproducible."""
    try:
        return q.mean
    except NotImplementedError:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            return q.sample((MC_MEAN_SAMPLES,)).mean(0)


@torch.no_grad()
def active_units(guide: Callable, x: torch.Tensor, threshold: float = 0.01):
    """Burda et al. (2016), sec. 5.2: dimension j is active when Cov_x(E_q[z_j | x]) > 0.01.

    Returns (number active, activity per dimension).
    """
    activity = posterior_means(guide, x).double().var(dim=0)
    return int((activity > threshold).sum()), activity.float()


@torch.no_grad()
def kl_per_dimension(model: Callable, guide: Callable, x: torch.Tensor) -> torch.Tensor | None:
    """Mean over images of KL(q(z_j|x) || p(z_j)) per latent dimension, in nats.

    Defined when guide and prior both factorise over dimensions as Gaussians (the rate then
    splits exactly); None otherwise (a mixture prior does not factorise).
    """
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    latent = [s for s in guide_trace.nodes.values() if _is_sample(s) and not s["is_observed"]]
    if len(latent) != 1:
        return None  # several layers: the rate does not split by dimension
    for name, site in guide_trace.nodes.items():
        if not _is_sample(site) or site["is_observed"]:
            continue
        q, p = site["fn"], model_trace.nodes[name]["fn"]
        q_base, p_base = getattr(q, "base_dist", None), getattr(p, "base_dist", None)
        if not (
            isinstance(q_base, torch.distributions.Normal)
            and isinstance(p_base, torch.distributions.Normal)
        ):
            return None
        return kl_divergence(q_base, p_base).reshape(x.shape[0], -1).mean(0)
    return None
