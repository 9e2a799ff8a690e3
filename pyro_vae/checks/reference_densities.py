"""Hand-written log p(x|z), log p(z) and KL(q || p) for every registered likelihood and prior:
the yardstick every Pyro objective is checked against.

No density or KL here comes from ``pyro`` or ``torch.distributions``: each is written out from
its formula (:mod:`pyro_vae.densities`), so that agreement with Pyro's ELBO is evidence, not a
tautology. Every registered likelihood and prior must have an entry here; a test enforces it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..densities import (
    continuous_bernoulli_log_normalizer,
    negative_binomial_log_density,
    normal_log_density,
)

# --- log p(x|z): name -> f(likelihood module, decoder output, x) -> per-image sum ------------


def _bernoulli(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x * out - F.softplus(out)).sum(-1)


def _continuous_bernoulli(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x * out - F.softplus(out) + continuous_bernoulli_log_normalizer(out)).sum(-1)


def _gaussian(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(lik.sigma, dtype=out.dtype, device=out.device)
    return normal_log_density(x, out, sigma).sum(-1)


def _gaussian_learned(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    sigma = lik.sigma_floor + F.softplus(lik.raw_sigma)
    return normal_log_density(x, out, sigma).sum(-1)


def _laplace(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    b = lik.scale.floor + F.softplus(lik.scale.raw)
    return (-(x - out).abs() / b - torch.log(2 * b)).sum(-1)


def _beta(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Beta(x'; a, b) + log(1 - 2 eps) per pixel, x' = eps + (1 - 2 eps) x."""
    d, eps = lik.data_dim, lik.eps
    a = F.softplus(out[..., :d]) + lik.min_concentration
    b = F.softplus(out[..., d:]) + lik.min_concentration
    xs = eps + (1 - 2 * eps) * x
    log_beta_fn = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    log_density = (a - 1) * torch.log(xs) + (b - 1) * torch.log1p(-xs) - log_beta_fn
    return (log_density + math.log(1 - 2 * eps)).sum(-1)


def _log_sigmoid(t: torch.Tensor) -> torch.Tensor:
    """log sigma(t) = -softplus(-t), softplus(u) = max(u, 0) + log(1 + e^-|u|) written out:
    exact for every u (F.softplus turns linear past u = 20), its gradient sigma(t) even at 0."""
    u = -t
    return -(0.5 * (u + u.abs()) + torch.log1p(torch.exp(-u.abs())))


def _discretized_logistic(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log P(level k) of x = k/255: on [-1, 1] bin centre y = 2k/255 - 1, half-width 1/255,
    P = sigma(plus) - sigma(minus) with plus, minus = (y +- 1/255 - mu) / s; the edge bins are
    sigma(plus) (k = 0) and 1 - sigma(minus) (k = 255); s = exp(max(log s, floor)).

    The difference of sigmoids is taken in the tail the bin lies in (the sigmoids left of mu,
    their complements 1 - sigma right of it), as log a + log(1 - b / a) from log-sigmoids."""
    d = lik.data_dim
    mu = out[..., :d]
    s = torch.exp(torch.clamp(out[..., d:], min=lik.log_scale_floor))
    k = torch.round(255 * x)
    y = 2 * k / 255 - 1
    plus, minus = (y + 1 / 255 - mu) / s, (y - 1 / 255 - mu) / s
    right = plus + minus > 0
    log_a = _log_sigmoid(torch.where(right, -minus, plus))  # the larger of the two
    log_b = _log_sigmoid(torch.where(right, -plus, minus))
    inner = log_a + torch.log(-torch.expm1(log_b - log_a))
    edges = torch.where(k == 0, _log_sigmoid(plus), _log_sigmoid(-minus))
    return torch.where((k == 0) | (k == 255), edges, inner).sum(-1)


def _count_log_mean(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log mu: the decoder output, or log(library size) + log-softmax of it."""
    eta = out[..., : lik.data_dim]
    if lik.library == "none":
        return eta
    return torch.log(x.sum(-1, keepdim=True)) + eta - torch.logsumexp(eta, -1, keepdim=True)


def _poisson(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    log_mu = _count_log_mean(lik, out, x)
    return (x * log_mu - log_mu.exp() - torch.lgamma(x + 1)).sum(-1)


def _negative_binomial_terms(lik: nn.Module, out: torch.Tensor, x: torch.Tensor):
    return negative_binomial_log_density(x, _count_log_mean(lik, out, x), lik.log_theta)


def _negative_binomial(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return _negative_binomial_terms(lik, out, x)[0].sum(-1)


def _zero_inflated_negative_binomial(
    lik: nn.Module, out: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """x = 0: log(pi + (1 - pi) NB(0)); x > 0: log(1 - pi) + log NB(x); pi = sigmoid(gate)."""
    log_nb, nb_zero = _negative_binomial_terms(lik, out, x)
    gate = out[..., lik.data_dim :]
    log_pi, log_not_pi = -F.softplus(-gate), -F.softplus(gate)
    zero = torch.logaddexp(log_pi, log_not_pi + nb_zero)
    return torch.where(x == 0, zero, log_not_pi + log_nb).sum(-1)


LOG_LIKELIHOODS: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "bernoulli": _bernoulli,
    "continuous-bernoulli": _continuous_bernoulli,
    "gaussian": _gaussian,
    "gaussian-learned": _gaussian_learned,
    "laplace": _laplace,
    "beta": _beta,
    "discretized-logistic": _discretized_logistic,
    "poisson": _poisson,
    "negative-binomial": _negative_binomial,
    "zero-inflated-negative-binomial": _zero_inflated_negative_binomial,
}

# --- log p(z) and, where it exists, KL(q || p): name -> f(prior module, ...) ------------------


# Gaussian priors by their (loc, scale); the KL and log-density below are shared.
_GAUSSIAN_PRIOR_PARAMS: dict[str, Callable[[nn.Module, torch.Tensor], tuple]] = {
    "normal": lambda prior, like: (torch.zeros_like(like), torch.ones_like(like)),
    "learned-normal": lambda prior, like: (prior.loc, prior.log_scale.exp()),
}


def _normal_params(prior: nn.Module, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _GAUSSIAN_PRIOR_PARAMS[type(prior).registry_name](prior, like)


def _normal_log_prior(prior: nn.Module, z: torch.Tensor) -> torch.Tensor:
    loc, scale = _normal_params(prior, z)
    return normal_log_density(z, loc, scale).sum(-1)


def _mixture_log_prior(prior: nn.Module, z: torch.Tensor) -> torch.Tensor:
    log_weights = prior.logits - torch.logsumexp(prior.logits, -1)  # (K,)
    comp = normal_log_density(z.unsqueeze(-2), prior.locs, prior.log_scales.exp()).sum(-1)
    return torch.logsumexp(log_weights + comp, dim=-1)


def normal_kl_per_dimension(
    prior: nn.Module, loc: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """KL(N(loc, scale^2) || p(z_j)) for each dimension j of a Gaussian prior."""
    p_loc, p_scale = _normal_params(prior, loc)
    return torch.log(p_scale / scale) + (scale**2 + (loc - p_loc) ** 2) / (2 * p_scale**2) - 0.5


def _normal_kl(prior: nn.Module, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return normal_kl_per_dimension(prior, loc, scale).sum(-1)


def _vamp_log_prior(prior: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k N(z; loc(u_k), scale(u_k)^2), u_k = clip(pseudo-input k, 0, 1)."""
    u = torch.clamp(prior.pseudo_inputs, 0.0, 1.0)
    loc, scale = prior.encoder(u)  # (K, z_dim)
    comp = normal_log_density(z.unsqueeze(-2), loc, scale).sum(-1)
    return torch.logsumexp(comp, dim=-1) - math.log(u.shape[0])


LOG_PRIORS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "normal": _normal_log_prior,
    "learned-normal": _normal_log_prior,
    "mixture": _mixture_log_prior,
    "vamp": _vamp_log_prior,
}

# priors whose density depends on the encoder's parameters (IWAE-gradient references below)
ENCODER_PRIORS = {"vamp"}

ANALYTIC_KLS: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "normal": _normal_kl,
    "learned-normal": _normal_kl,
    # "mixture": no closed form; estimators fall back to Monte Carlo
}
