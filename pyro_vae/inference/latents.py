"""What the latent space holds: posterior means, active units, KL per dimension."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro import poutine
from torch.distributions import kl_divergence

from .traces import latent_sites


@torch.no_grad()
def posterior_means(guide: Callable, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """E_q[z | x] per image, shape (N, z_dim) (the guide's single latent site)."""
    means = []
    for start in range(0, x.shape[0], batch_size):
        trace = poutine.trace(guide).get_trace(x[start : start + batch_size])
        latent = latent_sites(trace)
        if not latent:
            raise ValueError("posterior_means needs a guide with a latent site")
        # several layers: the first one the guide samples, the one next to the data
        means.append(_mean(trace.nodes[latent[0]]["fn"], x.device))
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
    latent = latent_sites(guide_trace)
    if len(latent) != 1:
        return None  # no latent site, or several layers: the rate does not split by dimension
    q, p = guide_trace.nodes[latent[0]]["fn"], model_trace.nodes[latent[0]]["fn"]
    q_base, p_base = getattr(q, "base_dist", None), getattr(p, "base_dist", None)
    if not (
        isinstance(q_base, torch.distributions.Normal)
        and isinstance(p_base, torch.distributions.Normal)
    ):
        return None
    return kl_divergence(q_base, p_base).reshape(x.shape[0], -1).mean(0)
