"""Hand-written importance log-weights, the quantity every hand-written loss is made of.

With z = loc(x) + scale(x) * eps, eps ~ N(0, I), and the densities of
:mod:`pyro_vae.checks.reference_densities`:

    log w = log p(x|z) + beta (log p(z) - log q(z|x)),

for one VAE layer, and for two stochastic layers (z1 from x, z2 from z1)

    log w = log p(x|z1) + beta (log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1)).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..densities import normal_log_density
from ..model.conditional import ConditionalVAE
from ..model.two_layer import TwoLayerVAE
from .reference_densities import LOG_LIKELIHOODS, LOG_PRIORS
from .reference_guides import _frozen, reference_sample


def sample_and_decode(vae: nn.Module, x: torch.Tensor, eps: torch.Tensor):
    """(the reference sample of q(z|x), log p(x|z) summed over pixels). For a conditional
    VAE the decoder reads [z, c] and the likelihood scores the pixels before the context."""
    q = reference_sample(vae, x, eps)
    name = type(vae.likelihood).registry_name
    if isinstance(vae, ConditionalVAE):
        pixels, context = x[..., : vae.data_dim], x[..., vae.data_dim :]
        context = context.expand(*q.z.shape[:-1], context.shape[-1])
        out = vae.decoder(torch.cat([q.z, context], -1))
        return q, LOG_LIKELIHOODS[name](vae.likelihood, out, pixels)
    return q, LOG_LIKELIHOODS[name](vae.likelihood, vae.decoder(q.z), x)


def two_layer_log_weights(
    vae: nn.Module,
    x: torch.Tensor,
    eps: tuple[torch.Tensor, torch.Tensor],
    beta: float,
    stop_q_params: bool = False,
) -> torch.Tensor:
    """Two stochastic layers: z1 = loc(x) + scale(x) eps1, z2 = loc'(z1) + scale'(z1) eps2,
    log w = log p(x|z1) + beta (log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1)).
    With ``stop_q_params`` log q is evaluated with the encoders' parameters held constant,
    q(z2|z1) still moving with z1."""
    eps1, eps2 = eps
    loc1, scale1 = vae.encoder(x)
    z1 = loc1 + scale1 * eps1
    loc2, scale2 = vae.upper_encoder(z1)
    z2 = loc2 + scale2 * eps2
    name = type(vae.likelihood).registry_name
    log_lik = LOG_LIKELIHOODS[name](vae.likelihood, vae.decoder(z1), x)
    if beta == 0:
        return log_lik
    if stop_q_params:
        loc1, scale1 = loc1.detach(), scale1.detach()
        loc2, scale2 = _frozen(vae.upper_encoder)(z1)
    log_q = normal_log_density(z1, loc1, scale1).sum(-1) + normal_log_density(z2, loc2, scale2).sum(
        -1
    )
    p_loc, p_scale = vae.upper_decoder(z2)
    log_p = normal_log_density(z1, p_loc, p_scale).sum(-1)
    log_p = log_p + LOG_PRIORS[type(vae.prior).registry_name](vae.prior, z2)
    return log_lik + beta * (log_p - log_q)


def is_two_layer(vae: nn.Module) -> bool:
    return isinstance(vae, TwoLayerVAE)


def reference_log_weights(
    vae: nn.Module,
    x: torch.Tensor,
    eps: torch.Tensor,
    beta: float = 1.0,
    stop_q_params: bool = False,
    prior: nn.Module | None = None,
) -> torch.Tensor:
    """log w_k = log p(x|z_k) + beta (log p(z_k) - log q(z_k|x)), z_k from the noise eps_k.

    ``eps`` has shape (K, N, z_dim); the result (K, N). With ``stop_q_params`` the density
    log q is evaluated with its parameters held constant, so it is differentiated through z
    only. ``prior`` replaces the VAE's prior module in log p(z). For the two-layer VAE
    ``eps`` is the pair (eps1, eps2).
    """
    if is_two_layer(vae):
        return two_layer_log_weights(vae, x, eps, beta, stop_q_params)
    q, log_lik = sample_and_decode(vae, x, eps)
    if beta == 0:
        return log_lik
    log_q = q.log_q_stopped() if stop_q_params else q.log_q
    prior = vae.prior if prior is None else prior
    log_p = LOG_PRIORS[type(prior).registry_name](prior, q.z)
    return log_lik + beta * (log_p - log_q)


def with_frozen_encoder(prior: nn.Module) -> nn.Module:
    """A copy of an encoder-built prior whose encoder parameters are constants."""
    frozen = copy.deepcopy(prior)
    for p in frozen.encoder.parameters():
        p.requires_grad_(False)
    return frozen
