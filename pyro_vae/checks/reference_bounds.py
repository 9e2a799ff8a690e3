"""Hand-written importance-weighted bounds, values and gradients: IWAE (Burda et al., 2016),
MIWAE, PIWAE and CIWAE (Rainforth et al., 2018) and VR-alpha (Li & Turner, 2016).

With log w_k from :func:`~pyro_vae.checks.reference_weights.reference_log_weights` (noise eps
of shape (P, N, z_dim), P particles) and LME_k(a_k) = log (1/K) sum_k exp(a_k):

    IWAE_K(x)      = LME_k(log w_k)                                      (P = K)
    MIWAE(M, K)(x) = (1/M) sum_m LME_k(log w_{m,k}),  group m = particles m K .. m K + K - 1
    VR_alpha(x)    = LME_k((1 - alpha) log w_k) / (1 - alpha)
    CIWAE(x)       = mix (1/K) sum_k log w_k + (1 - mix) IWAE_K(x)
    PIWAE(M, K)(x) = IWAE_{MK}(x) in value; gradients in :func:`reference_piwae_gradients`

VR-alpha and CIWAE take the plain gradient of their value; the IWAE, MIWAE and PIWAE
gradients are written here with separate surrogates per parameter group. Each bound's batch
loss, -sum_n bound(x_n), is registered as the reference of its estimator class
(:func:`~pyro_vae.checks.references.register_reference`); MIWAE, an IWAE with groups, takes
IWAE's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..inference.bounds import CIWAE, PIWAE, RenyiBound
from ..inference.iwae import IWAE
from .reference_densities import ENCODER_PRIORS, LOG_PRIORS
from .reference_guides import reference_sample
from .reference_weights import reference_log_weights, with_frozen_encoder
from .references import Noise, as_particles, register_reference


def _log_mean_exp(a: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(a, dim=dim) - math.log(a.shape[dim])


def _in_groups(log_w: torch.Tensor, groups: int) -> torch.Tensor:
    """(M K, N) -> (M, K, N)."""
    return log_w.reshape(groups, log_w.shape[0] // groups, *log_w.shape[1:])


def reference_miwae(
    vae: nn.Module, x: torch.Tensor, eps: torch.Tensor, beta: float = 1.0, groups: int = 1
) -> torch.Tensor:
    """Per-image (1/M) sum_m log (1/K) sum_k w_{m,k}, M = groups, K = eps.shape[0] / M."""
    log_w = _in_groups(reference_log_weights(vae, x, eps, beta), groups)
    return _log_mean_exp(log_w, 1).mean(0)


def reference_iwae(vae: nn.Module, x: torch.Tensor, eps: torch.Tensor, beta: float = 1.0):
    """Per-image L_K(x) = log (1/K) sum_k w_k (Burda et al., 2016); K = eps.shape[0]."""
    return reference_miwae(vae, x, eps, beta, groups=1)


def reference_renyi(
    vae: nn.Module, x: torch.Tensor, eps: torch.Tensor, beta: float, alpha: float
) -> torch.Tensor:
    """Per-image VR-alpha bound, 1/(1 - alpha) log (1/K) sum_k w_k^(1 - alpha)."""
    log_w = reference_log_weights(vae, x, eps, beta)
    return _log_mean_exp((1 - alpha) * log_w, 0) / (1 - alpha)


def reference_ciwae(
    vae: nn.Module, x: torch.Tensor, eps: torch.Tensor, beta: float, mix: float
) -> torch.Tensor:
    """Per-image mix ELBO + (1 - mix) IWAE_K on the same K particles."""
    log_w = reference_log_weights(vae, x, eps, beta)
    return mix * log_w.mean(0) + (1 - mix) * _log_mean_exp(log_w, 0)


def _by_role(vae: nn.Module, phi_grads, theta_grads) -> list[torch.Tensor]:
    """The encoder's parameters (phi) take ``phi_grads``, all others ``theta_grads``."""
    params = list(vae.parameters())
    encoder = {id(p) for p in vae.guide_parameters()}
    return [
        torch.zeros_like(p) if g is None else g
        for p, g in (
            (p, phi if id(p) in encoder else theta)
            for p, phi, theta in zip(params, phi_grads, theta_grads, strict=True)
        )
    ]


def _fixed_z_prior_term(vae, x, eps, beta, weights) -> torch.Tensor | float:
    """-beta sum weights log p(z) at fixed z: how an encoder-built prior's parameters enter
    log w other than through the sample (0 for other priors)."""
    name = type(vae.prior).registry_name
    if name not in ENCODER_PRIORS or beta == 0:
        return 0.0
    z = reference_sample(vae, x, eps).z.detach()
    return -(beta * weights * LOG_PRIORS[name](vae.prior, z)).sum()


def reference_miwae_gradients(
    vae: nn.Module, x: torch.Tensor, eps: torch.Tensor, beta: float, grad: str, groups: int = 1
) -> list[torch.Tensor]:
    """Gradients of -sum_n MIWAE(M, K)(x_n) for every parameter of ``vae``, by the named
    estimator applied within each of the M = ``groups`` groups (M = 1: IWAE_K).

    Decoder, prior and likelihood parameters (theta) get the plain gradient under every
    estimator. Encoder parameters (phi), with w~ = softmax over the K particles of a group:
      standard: d/dphi of -sum_n MIWAE, score term included;
      stl:      (1/M) sum_{m,k} w~_{m,k} d(log w_{m,k})/dphi, log q differentiated through z
                only;
      dreg:     the same with each term weighted by c = 1 - beta + beta w~ (Tucker et al.,
                2019, eq. 6 at beta = 1: c = w~).
    A prior built from the encoder (VampPrior) makes phi a model parameter too: that direct
    dependence gets the plain weight, (beta / M) sum w~ d(log p(z))/dphi at fixed z, and
    only the path through z is reweighted.
    Written with separate surrogates per parameter group, unlike the estimator's hooks.
    """
    params = list(vae.parameters())
    plain = -reference_miwae(vae, x, eps, beta, groups).sum()
    theta_grads = torch.autograd.grad(plain, params, allow_unused=True, retain_graph=True)
    if grad == "standard":
        return _by_role(vae, theta_grads, theta_grads)
    encoder_prior = type(vae.prior).registry_name in ENCODER_PRIORS
    frozen = with_frozen_encoder(vae.prior) if encoder_prior else None
    log_w = reference_log_weights(vae, x, eps, beta, stop_q_params=True, prior=frozen)
    normalised = torch.softmax(_in_groups(log_w.detach(), groups), dim=1).reshape(log_w.shape)
    weights = normalised
    if grad == "dreg":
        weights = weights * (1 - beta + beta * weights)
    surrogate = -(weights * log_w).sum() / groups
    surrogate = surrogate + _fixed_z_prior_term(vae, x, eps, beta, normalised / groups)
    phi_grads = torch.autograd.grad(surrogate, params, allow_unused=True)
    return _by_role(vae, phi_grads, theta_grads)


def reference_iwae_gradients(
    vae: nn.Module, x: torch.Tensor, eps: torch.Tensor, beta: float, grad: str
) -> list[torch.Tensor]:
    """Gradients of -sum_n L_K(x_n) by the named estimator: MIWAE's with one group."""
    return reference_miwae_gradients(vae, x, eps, beta, grad, groups=1)


def reference_piwae_gradients(
    vae: nn.Module, x: torch.Tensor, eps: torch.Tensor, beta: float, groups: int
) -> list[torch.Tensor]:
    """Gradients of PIWAE(M, K) (Rainforth et al., 2018), M = ``groups``: every parameter
    but the encoder's (theta) takes the gradient of -sum_n IWAE_{MK}, the encoder's (phi) that
    of -sum_n MIWAE(M, K), both standard.

    A prior built from the encoder (VampPrior) also makes phi a model parameter: phi then
    takes MIWAE's gradient through z and log q (the prior's encoder held constant) and
    IWAE_{MK}'s through log p(z) at fixed z.
    """
    params = list(vae.parameters())
    iwae = -reference_iwae(vae, x, eps, beta).sum()
    theta_grads = torch.autograd.grad(iwae, params, allow_unused=True)
    encoder_prior = type(vae.prior).registry_name in ENCODER_PRIORS
    frozen = with_frozen_encoder(vae.prior) if encoder_prior else None
    log_w = reference_log_weights(vae, x, eps, beta, prior=frozen)
    miwae = -_log_mean_exp(_in_groups(log_w, groups), 1).mean(0).sum()
    all_weights = torch.softmax(log_w.detach(), dim=0)  # IWAE_{MK}'s, over all M K particles
    surrogate = miwae + _fixed_z_prior_term(vae, x, eps, beta, all_weights)
    phi_grads = torch.autograd.grad(surrogate, params, allow_unused=True)
    return _by_role(vae, phi_grads, theta_grads)


def _noise(elbo: IWAE, x: torch.Tensor, eps: Noise) -> Noise:
    """The noise of all M K particles, shape (M K, N, z_dim) (each of the pair for two layers)."""
    return as_particles(eps, elbo.num_particles, x.shape[0])


@register_reference(IWAE)
def iwae_loss(vae: nn.Module, elbo: IWAE, x: torch.Tensor, eps: Noise) -> torch.Tensor:
    """-sum_n MIWAE(M, K)(x_n) with M = ``elbo.groups``: IWAE_K for M = 1, and MIWAE (an IWAE
    with groups) by inheritance. The value does not depend on the gradient estimator; compare
    gradients with :func:`reference_miwae_gradients`."""
    return -reference_miwae(vae, x, _noise(elbo, x, eps), vae.beta, elbo.groups).sum()


@register_reference(PIWAE)
def piwae_loss(vae: nn.Module, elbo: PIWAE, x: torch.Tensor, eps: Noise) -> torch.Tensor:
    """-sum_n IWAE_{MK}(x_n): PIWAE's value (its gradients: :func:`reference_piwae_gradients`)."""
    return -reference_iwae(vae, x, _noise(elbo, x, eps), vae.beta).sum()


@register_reference(RenyiBound)
def renyi_loss(vae: nn.Module, elbo: RenyiBound, x: torch.Tensor, eps: Noise) -> torch.Tensor:
    """-sum_n VR_alpha(x_n)."""
    return -reference_renyi(vae, x, _noise(elbo, x, eps), vae.beta, elbo.alpha).sum()


@register_reference(CIWAE)
def ciwae_loss(vae: nn.Module, elbo: CIWAE, x: torch.Tensor, eps: Noise) -> torch.Tensor:
    """-sum_n [mix ELBO(x_n) + (1 - mix) IWAE_K(x_n)]."""
    return -reference_ciwae(vae, x, _noise(elbo, x, eps), vae.beta, elbo.mix).sum()
