"""Log-densities written out from their formulas, with no ``pyro`` or ``torch.distributions``.

They are the hand-written side of every check (:mod:`pyro_vae.checks`), and the synthetic count
data (:mod:`pyro_vae.data.synthetic`) scores its true model with them; both layers import them
from here, below both.
"""

from __future__ import annotations

import math

import torch

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def normal_log_density(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(x; loc, scale^2)."""
    return -0.5 * ((x - loc) / scale) ** 2 - torch.log(scale) - HALF_LOG_2PI


def continuous_bernoulli_log_normalizer(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) for lambda = sigmoid(eta), written in the logit eta.

    C = 2 atanh(1 - 2 lambda) / (1 - 2 lambda) = eta / tanh(eta / 2), which tends to 2 as
    eta -> 0; near 0 we use the series eta / tanh(eta/2) = 2 + eta^2 / 6 - eta^4 / 360.
    """
    small = logits.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = torch.log(safe / torch.tanh(safe / 2))
    series = torch.log(2 + logits**2 / 6 - logits**4 / 360)
    return torch.where(small, series, exact)


def negative_binomial_log_density(
    x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise log NB(x; mu, theta) and log NB(0; mu, theta), in the mean /
    inverse-dispersion form (as scVI writes it):
    lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)
        + theta log(theta / (theta + mu)) + x log(mu / (theta + mu))."""
    theta = log_theta.exp()
    log_theta_mu = torch.logaddexp(log_theta, log_mu)  # log(theta + mu)
    at_zero = theta * (log_theta - log_theta_mu)
    log_nb = (
        torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
        + at_zero
        + x * (log_mu - log_theta_mu)
    )
    return log_nb, at_zero
