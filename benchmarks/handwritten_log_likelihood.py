"""The importance-sampling loop people write by hand: the yardstick for log p(x)'s speed.

For a VAE with Bernoulli pixels, a standard normal prior and a diagonal Gaussian q(z|x)
(Burda et al., 2016, sec. 5):

    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K,
    z_k = mu(x) + s(x) * eps_k,

in plain PyTorch, no Pyro: a chunk of ``batch_size`` images x ``particle_batch`` particles at a
time, each chunk's log-weights reduced with ``logsumexp`` in float64 and combined with
``logaddexp``. The chunk defaults (100 x 500) are the ones this project's own evaluation used
before its chunks were sized to the cache.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def _chunk_log_weights(
    encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, particles: int
) -> torch.Tensor:
    """log w of ``particles`` draws per image, shape (particles, images)."""
    mu, s = encoder(x)
    eps = torch.randn(particles, *mu.shape, dtype=mu.dtype, device=mu.device)
    z = mu + s * eps
    logits = decoder(z)
    log_px_z = -F.binary_cross_entropy_with_logits(
        logits, x.expand_as(logits), reduction="none"
    ).sum(-1)
    log_pz = (-0.5 * z.pow(2) - 0.5 * LOG_2PI).sum(-1)
    log_qz = (-0.5 * eps.pow(2) - torch.log(s) - 0.5 * LOG_2PI).sum(-1)
    return log_px_z + log_pz - log_qz


@torch.no_grad()
def handwritten_log_likelihood(
    encoder: nn.Module,
    decoder: nn.Module,
    x: torch.Tensor,
    num_samples: int = 5000,
    batch_size: int = 100,
    particle_batch: int = 500,
) -> torch.Tensor:
    """Importance-sampled log p(x) per image, K = ``num_samples``."""
    estimates = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        lse = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
        for k0 in range(0, num_samples, particle_batch):
            k = min(particle_batch, num_samples - k0)
            log_w = _chunk_log_weights(encoder, decoder, xb, k).double()
            lse = torch.logaddexp(lse, torch.logsumexp(log_w, 0))
        estimates.append(lse - math.log(num_samples))
    return torch.cat(estimates)
