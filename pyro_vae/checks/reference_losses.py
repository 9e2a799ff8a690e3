"""Hand-written PyTorch losses: the yardstick every Pyro objective is checked against.

With z = loc(x) + scale(x) * eps, eps ~ N(0, I), and the densities of
:mod:`pyro_vae.checks.reference_densities`:

    ELBO_beta(x) = log p(x|z) - beta * KL,
    KL_mc        = log q(z|x) - log p(z)                                 (Trace_ELBO)
    KL_analytic  = sum_j [log(s_p/s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2]
                                                           (TraceMeanField_ELBO; Gaussian p)
    IWAE_K(x)    = log (1/K) sum_k w_k,  log w_k = log p(x|z_k) + beta (log p(z_k) - log q(z_k|x))

and, for the free-bits and capacity objectives, their reshaped KL terms. Pyro's estimator
classes are imported only to pick the matching reference.
"""

from __future__ import annotations

import copy
import math

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from ..densities import normal_log_density
from ..inference.iwae import IWAE
from ..inference.kl_shaping import CapacityELBO, FreeBitsELBO, KLShapingELBO
from ..inference.sync_free import MeanFieldELBO, MonteCarloELBO
from ..model.conditional import ConditionalVAE
from ..model.two_layer import TwoLayerVAE
from .reference_densities import (
    ANALYTIC_KLS,
    ENCODER_PRIORS,
    LOG_LIKELIHOODS,
    LOG_PRIORS,
    normal_kl_per_dimension,
)
from .reference_guides import _frozen, reference_sample


class MissingReference(ValueError):
    """A likelihood, prior, guide or estimator has no hand-written counterpart."""


def _sample_and_decode(vae: nn.Module, x: torch.Tensor, eps: torch.Tensor):
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


def _two_layer_log_weights(
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


def _is_two_layer(vae: nn.Module) -> bool:
    return isinstance(vae, TwoLayerVAE)


def _is_diagonal(vae: nn.Module) -> bool:
    return type(vae.q).registry_name == "diagonal"


def reference_elbo(
    vae: nn.Module,
    x: torch.Tensor,
    eps: torch.Tensor,
    beta: float = 1.0,
    analytic_kl: bool = False,
) -> torch.Tensor:
    """Per-image ELBO_beta(x) at the z that the noise eps gives, from the VAE's networks."""
    if _is_two_layer(vae):  # Monte Carlo KL only: no estimator may use per-site analytic KLs
        return _two_layer_log_weights(vae, x, eps, beta)
    q, log_lik = _sample_and_decode(vae, x, eps)
    prior_name = type(vae.prior).registry_name
    if analytic_kl and prior_name in ANALYTIC_KLS and _is_diagonal(vae):
        kl = ANALYTIC_KLS[prior_name](vae.prior, q.loc, q.scale)
    else:
        kl = q.log_q - LOG_PRIORS[prior_name](vae.prior, q.z)
    if beta == 0:
        return log_lik
    return log_lik - beta * kl


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
    if _is_two_layer(vae):
        return _two_layer_log_weights(vae, x, eps, beta, stop_q_params)
    q, log_lik = _sample_and_decode(vae, x, eps)
    if beta == 0:
        return log_lik
    log_q = q.log_q_stopped() if stop_q_params else q.log_q
    prior = vae.prior if prior is None else prior
    log_p = LOG_PRIORS[type(prior).registry_name](prior, q.z)
    return log_lik + beta * (log_p - log_q)


def _with_frozen_encoder(prior: nn.Module) -> nn.Module:
    """A copy of an encoder-built prior whose encoder parameters are constants."""
    frozen = copy.deepcopy(prior)
    for p in frozen.encoder.parameters():
        p.requires_grad_(False)
    return frozen


def reference_iwae(vae: nn.Module, x: torch.Tensor, eps: torch.Tensor, beta: float = 1.0):
    """Per-image L_K(x) = log (1/K) sum_k w_k (Burda et al., 2016); K = eps.shape[0]."""
    log_w = reference_log_weights(vae, x, eps, beta)
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def reference_iwae_gradients(
    vae: nn.Module, x: torch.Tensor, eps: torch.Tensor, beta: float, grad: str
) -> list[torch.Tensor]:
    """Gradients of -sum_n L_K(x_n) for every parameter of ``vae``, by the named estimator.

    Decoder, prior and likelihood parameters (theta) get the plain gradient under every
    estimator. Encoder parameters (phi), with w~ = softmax_k(log w):
      standard: d/dphi of -sum_n L_K, score term included;
      stl:      sum_k w~_k d(log w_k)/dphi with log q differentiated through z only;
      dreg:     the same with each term weighted by c_k = 1 - beta + beta w~_k (Tucker et al.,
                2019, eq. 6 at beta = 1: c_k = w~_k).
    A prior built from the encoder (VampPrior) makes phi a model parameter too: that direct
    dependence gets the plain weight, beta sum_k w~_k d(log p(z_k))/dphi at fixed z_k, and
    only the path through z_k is reweighted.
    Written with separate surrogates per parameter group, unlike the estimator's hooks.
    """
    params = list(vae.parameters())
    encoder = {id(p) for p in vae.guide_parameters()}
    plain = -reference_iwae(vae, x, eps, beta).sum()
    theta_grads = torch.autograd.grad(plain, params, allow_unused=True, retain_graph=True)
    if grad == "standard":
        phi_grads = theta_grads
    else:
        prior_name = type(vae.prior).registry_name
        encoder_prior = prior_name in ENCODER_PRIORS
        frozen = _with_frozen_encoder(vae.prior) if encoder_prior else None
        log_w = reference_log_weights(vae, x, eps, beta, stop_q_params=True, prior=frozen)
        normalised = torch.softmax(log_w.detach(), dim=0)
        weights = normalised
        if grad == "dreg":
            weights = weights * (1 - beta + beta * weights)
        surrogate = -(weights * log_w).sum()
        if encoder_prior and beta != 0:
            z = reference_sample(vae, x, eps).z.detach()
            log_p = LOG_PRIORS[prior_name](vae.prior, z)
            surrogate = surrogate - (beta * normalised * log_p).sum()
        phi_grads = torch.autograd.grad(surrogate, params, allow_unused=True)
    return [
        torch.zeros_like(p) if g is None else g
        for p, g in (
            (p, phi if id(p) in encoder else theta)
            for p, phi, theta in zip(params, phi_grads, theta_grads, strict=True)
        )
    ]


def reference_shaped_kl_loss(
    vae: nn.Module, x: torch.Tensor, eps: torch.Tensor, elbo: KLShapingELBO
) -> torch.Tensor:
    """Free bits (Kingma et al., 2016) or capacity (Burgess et al., 2018), for a batch:
    -sum_n log p(x_n|z_n) + beta * N * sum_j max(lambda, mean_n KL_nj)
    or  ... + beta * N * gamma * |mean_n sum_j KL_nj - C|."""
    if not _is_diagonal(vae):
        raise MissingReference("free bits and capacity need the diagonal Gaussian guide")
    q, log_lik = _sample_and_decode(vae, x, eps)
    kl = normal_kl_per_dimension(vae.prior, q.loc, q.scale)  # (N, D)
    n = x.shape[0]
    if isinstance(elbo, FreeBitsELBO):
        shaped = n * torch.clamp(kl.mean(0), min=elbo.free_bits).sum()
    elif isinstance(elbo, CapacityELBO):
        shaped = n * elbo.gamma * torch.abs(kl.sum(1).mean() - elbo.capacity)
    else:
        raise MissingReference(f"no hand-written reference for {type(elbo).__name__}")
    if vae.beta == 0:
        return -log_lik.sum()
    return -log_lik.sum() + vae.beta * shaped


def _two_layer_noise(vae: nn.Module, x: torch.Tensor, z: tuple[torch.Tensor, torch.Tensor]):
    z1, z2 = z
    loc1, scale1 = vae.encoder(x)
    loc2, scale2 = vae.upper_encoder(z1)
    return (z1 - loc1) / scale1, (z2 - loc2) / scale2


def _particles(eps, particles: int, n: int) -> object:
    """eps (or each of a tuple of eps) reshaped to (particles, n, latent size)."""
    if isinstance(eps, tuple):
        return tuple(e.reshape(particles, n, e.shape[-1]) for e in eps)
    return eps.reshape(particles, n, eps.shape[-1])


def reference_loss(vae: nn.Module, elbo: object, x: torch.Tensor, z: torch.Tensor):
    """The hand-written loss that ``elbo`` estimates, at the guide's sample ``z``.

    The guide family recovers the noise eps (for the diagonal Gaussian, (z - loc) / scale),
    and the reference redraws z from it by hand. The estimator decides the reference: Monte
    Carlo KL for ``Trace_ELBO`` (and its sync-free twin), analytic KL where one exists for
    ``TraceMeanField_ELBO`` (and twin), the K-particle bound for ``IWAE`` (whose value does not
    depend on the gradient estimator; compare gradients with :func:`reference_iwae_gradients`),
    free bits or capacity for the KL-shaping objectives.
    """
    with torch.no_grad():
        eps = (
            _two_layer_noise(vae, x, z)
            if _is_two_layer(vae)
            else (vae.q.noise(vae.encoder, x, z.detach()))
        )
    particles = getattr(elbo, "num_particles", 1)
    if isinstance(elbo, (Trace_ELBO, TraceMeanField_ELBO)) and particles > 1:
        raise MissingReference("the reference of Pyro's ELBOs takes num_particles=1")
    if isinstance(elbo, IWAE):
        return -reference_iwae(vae, x, _particles(eps, particles, x.shape[0]), beta=vae.beta).sum()
    if isinstance(elbo, KLShapingELBO):
        return reference_shaped_kl_loss(vae, x, eps, elbo)
    if isinstance(elbo, (Trace_ELBO, TraceMeanField_ELBO, MonteCarloELBO, MeanFieldELBO)):
        if particles > 1:
            eps = _particles(eps, particles, x.shape[0])
        analytic = isinstance(elbo, (TraceMeanField_ELBO, MeanFieldELBO))
        return -reference_elbo(vae, x, eps, beta=vae.beta, analytic_kl=analytic).sum() / particles
    raise MissingReference(f"no hand-written reference for {type(elbo).__name__}")
