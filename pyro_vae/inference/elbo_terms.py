"""The ELBO of a trained model, split into distortion and rate, in nats per image.

Works on any Pyro ``model(x)`` / ``guide(x)`` pair whose sites live in ``plate("data")``:
the guide is traced, the model replayed against it, and every site's log-density taken
*without* the scale and mask handlers put on it, so the number is the plain (beta = 1) bound

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))

with the KL in closed form where torch has one, else estimated at the sampled z
(log q(z|x) - log p(z)). ``distortion = -E_q[log p(x|z)]`` and ``rate = KL`` (Alemi et al.,
2018) are reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro.distributions as dist
import torch
from pyro import poutine
from torch.distributions import kl_divergence

from .traces import is_sample, latent_sites, plain_log_density, rows_kept


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
    # per-site analytic KLs are exact only when no latent's model parents depend on it in the
    # guide (TraceMeanField_ELBO's condition); with several layers use the Monte Carlo estimate
    analytic_kl = analytic_kl and len(latent_sites(guide_trace)) == 1
    log_lik = x.new_zeros(x.shape[0])
    kl = x.new_zeros(x.shape[0])
    for name, site in model_trace.nodes.items():
        if not is_sample(site):
            continue
        if site["is_observed"]:
            log_lik = log_lik + plain_log_density(site)
            continue
        q_site = guide_trace.nodes[name]
        q = q_site["fn"]
        if isinstance(getattr(q, "base_dist", q), dist.Delta):
            # a point mass has no density against p(z): the KL, hence the ELBO, is undefined
            kl = kl + math.nan
            continue
        try:
            if not analytic_kl:
                raise NotImplementedError
            kl = kl + rows_kept(site, kl_divergence(q, site["fn"]))
        except NotImplementedError:
            kl = kl + plain_log_density(q_site) - plain_log_density(site)
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
    log_lik_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    kl_sum = torch.zeros((), dtype=torch.float64, device=x.device)  # (x may be LazyRows)
    for start in range(0, x.shape[0], batch_size):
        log_lik, kl = elbo_terms_per_image(model, guide, x[start : start + batch_size], analytic_kl)
        log_lik_sum += log_lik.sum().double()
        kl_sum += kl.sum().double()
    n = x.shape[0]
    distortion, rate = -log_lik_sum.item() / n, kl_sum.item() / n
    return ElboTerms(neg_elbo=distortion + rate, distortion=distortion, rate=rate)
