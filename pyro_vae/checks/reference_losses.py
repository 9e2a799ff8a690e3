"""Hand-written PyTorch losses: the yardstick every Pyro objective is checked against.

With z = loc(x) + scale(x) * eps, eps ~ N(0, I), and the densities of
:mod:`pyro_vae.checks.reference_densities`:

    ELBO_beta(x) = log p(x|z) - beta * KL,
    KL_mc        = log q(z|x) - log p(z)                                 (Trace_ELBO)
    KL_analytic  = sum_j [log(s_p/s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2]
                                                           (TraceMeanField_ELBO; Gaussian p)

and, for the free-bits and capacity objectives, their reshaped KL terms. The importance-weighted
bounds (IWAE, MIWAE, PIWAE, CIWAE, VR-alpha) are :mod:`pyro_vae.checks.reference_bounds`, from
the log-weights of :mod:`pyro_vae.checks.reference_weights`. Pyro's estimator classes are
imported only to pick the matching reference.
"""

from __future__ import annotations

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from ..inference.iwae import IWAE
from ..inference.kl_shaping import CapacityELBO, FreeBitsELBO, KLShapingELBO
from ..inference.sync_free import MeanFieldELBO, MonteCarloELBO
from ..model.discrete import JointVAE
from .reference_bounds import reference_bound
from .reference_bounds import reference_iwae as reference_iwae
from .reference_bounds import reference_iwae_gradients as reference_iwae_gradients
from .reference_densities import ANALYTIC_KLS, LOG_PRIORS, normal_kl_per_dimension
from .reference_discrete import reference_class_loss
from .reference_weights import is_two_layer, sample_and_decode, two_layer_log_weights


class MissingReference(ValueError):
    """A likelihood, prior, guide or estimator has no hand-written counterpart."""


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
    if is_two_layer(vae):  # Monte Carlo KL only: no estimator may use per-site analytic KLs
        return two_layer_log_weights(vae, x, eps, beta)
    q, log_lik = sample_and_decode(vae, x, eps)
    prior_name = type(vae.prior).registry_name
    if analytic_kl and prior_name in ANALYTIC_KLS and _is_diagonal(vae):
        kl = ANALYTIC_KLS[prior_name](vae.prior, q.loc, q.scale)
    else:
        kl = q.log_q - LOG_PRIORS[prior_name](vae.prior, q.z)
    if beta == 0:
        return log_lik
    return log_lik - beta * kl


def reference_shaped_kl_loss(
    vae: nn.Module, x: torch.Tensor, eps: torch.Tensor, elbo: KLShapingELBO
) -> torch.Tensor:
    """Free bits (Kingma et al., 2016) or capacity (Burgess et al., 2018), for a batch:
    -sum_n log p(x_n|z_n) + beta * N * sum_j max(lambda, mean_n KL_nj)
    or  ... + beta * N * gamma * |mean_n sum_j KL_nj - C|."""
    if not _is_diagonal(vae):
        raise MissingReference("free bits and capacity need the diagonal Gaussian guide")
    q, log_lik = sample_and_decode(vae, x, eps)
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
    depend on the gradient estimator; compare gradients with :func:`reference_iwae_gradients`)
    and the rest of its family (:func:`~pyro_vae.checks.reference_bounds.reference_bound`),
    free bits or capacity for the KL-shaping objectives. For a model with a class variable
    ``z`` is all the guide drew, and the reference is
    :func:`~pyro_vae.checks.reference_discrete.reference_class_loss`.
    """
    if isinstance(vae, JointVAE):  # a class variable: the draws are (y, z[, z_labelled])
        return reference_class_loss(vae, x, z)
    with torch.no_grad():
        eps = (
            _two_layer_noise(vae, x, z)
            if is_two_layer(vae)
            else (vae.q.noise(vae.encoder, x, z.detach()))
        )
    particles = getattr(elbo, "num_particles", 1)
    if isinstance(elbo, (Trace_ELBO, TraceMeanField_ELBO)) and particles > 1:
        raise MissingReference("the reference of Pyro's ELBOs takes num_particles=1")
    if isinstance(elbo, IWAE):  # and the rest of its family
        return -reference_bound(vae, elbo, x, _particles(eps, particles, x.shape[0])).sum()
    if isinstance(elbo, KLShapingELBO):
        return reference_shaped_kl_loss(vae, x, eps, elbo)
    if isinstance(elbo, (Trace_ELBO, TraceMeanField_ELBO, MonteCarloELBO, MeanFieldELBO)):
        if particles > 1:
            eps = _particles(eps, particles, x.shape[0])
        analytic = isinstance(elbo, (TraceMeanField_ELBO, MeanFieldELBO))
        return -reference_elbo(vae, x, eps, beta=vae.beta, analytic_kl=analytic).sum() / particles
    raise MissingReference(f"no hand-written reference for {type(elbo).__name__}")
