"""Hand-written PyTorch losses: the yardstick every Pyro objective is checked against.

With z = loc(x) + scale(x) * eps, eps ~ N(0, I), and the densities of
:mod:`pyro_vae.checks.reference_densities`:

    ELBO_beta(x) = log p(x|z) - beta * KL,
    KL_mc        = log q(z|x) - log p(z)                                 (Trace_ELBO)
    KL_analytic  = sum_j [log(s_p/s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2]
                                                           (TraceMeanField_ELBO; Gaussian p)

and, for the free-bits and capacity objectives, their reshaped KL terms. The importance-weighted
bounds (IWAE, MIWAE, PIWAE, CIWAE, VR-alpha) are :mod:`pyro_vae.checks.reference_bounds`, from
the log-weights of :mod:`pyro_vae.checks.reference_weights`. Each estimator class has its
reference registered against it (:func:`~pyro_vae.checks.references.register_reference`), and
:func:`reference_loss` dispatches through them by the class's MRO.
"""

from __future__ import annotations

import torch
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from torch import nn

from ..inference.kl_shaping import CapacityELBO, FreeBitsELBO
from ..inference.sync_free import MeanFieldELBO, MonteCarloELBO
from ..model.class_variable import JointVAE
from .reference_bounds import reference_iwae as reference_iwae
from .reference_bounds import reference_iwae_gradients as reference_iwae_gradients
from .reference_class_variable import reference_class_loss
from .reference_densities import ANALYTIC_KLS, LOG_PRIORS, normal_kl_per_dimension
from .reference_weights import is_two_layer, sample_and_decode, two_layer_log_weights
from .references import MissingReference as MissingReference
from .references import (
    Noise,
    as_particles,
    find_reference,
    register_no_reference,
    register_reference,
)


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


def _shaped_kl_terms(vae: nn.Module, x: torch.Tensor, eps: torch.Tensor):
    """(sum_n log p(x_n|z_n), KL_nj of shape (N, D)) for the KL-shaping objectives."""
    if not _is_diagonal(vae):
        raise MissingReference("free bits and capacity need the diagonal Gaussian guide")
    q, log_lik = sample_and_decode(vae, x, eps)
    return log_lik.sum(), normal_kl_per_dimension(vae.prior, q.loc, q.scale)


def _shaped_loss(vae: nn.Module, log_lik: torch.Tensor, shaped: torch.Tensor) -> torch.Tensor:
    return -log_lik if vae.beta == 0 else -log_lik + vae.beta * shaped


@register_reference(FreeBitsELBO)
def free_bits_loss(vae: nn.Module, elbo: FreeBitsELBO, x: torch.Tensor, eps: Noise):
    """Free bits (Kingma et al., 2016), for a batch of N:
    -sum_n log p(x_n|z_n) + beta * N * sum_j max(lambda, mean_n KL_nj)."""
    log_lik, kl = _shaped_kl_terms(vae, x, eps)
    return _shaped_loss(
        vae, log_lik, x.shape[0] * torch.clamp(kl.mean(0), min=elbo.free_bits).sum()
    )


@register_reference(CapacityELBO)
def capacity_loss(vae: nn.Module, elbo: CapacityELBO, x: torch.Tensor, eps: Noise):
    """Capacity (Burgess et al., 2018), for a batch of N:
    -sum_n log p(x_n|z_n) + beta * N * gamma * |mean_n sum_j KL_nj - C|."""
    log_lik, kl = _shaped_kl_terms(vae, x, eps)
    shaped = x.shape[0] * elbo.gamma * torch.abs(kl.sum(1).mean() - elbo.capacity)
    return _shaped_loss(vae, log_lik, shaped)


def _one_particle(elbo: ELBO) -> None:
    if elbo.num_particles > 1:  # Pyro draws its particles one after another: z is the last
        raise MissingReference("the reference of Pyro's ELBOs takes num_particles=1")


def _elbo_loss(vae: nn.Module, elbo: ELBO, x: torch.Tensor, eps: Noise, analytic: bool):
    """-(1/K) sum_k sum_n ELBO_beta(x_n) over the K particles of eps."""
    particles = elbo.num_particles
    if particles > 1:
        eps = as_particles(eps, particles, x.shape[0])
    return -reference_elbo(vae, x, eps, beta=vae.beta, analytic_kl=analytic).sum() / particles


@register_reference(Trace_ELBO)
def trace_elbo_loss(vae: nn.Module, elbo: Trace_ELBO, x: torch.Tensor, eps: Noise):
    """-sum_n ELBO_beta(x_n) with the Monte Carlo KL (one particle)."""
    _one_particle(elbo)
    return _elbo_loss(vae, elbo, x, eps, analytic=False)


@register_reference(TraceMeanField_ELBO)
def mean_field_elbo_loss(vae: nn.Module, elbo: TraceMeanField_ELBO, x: torch.Tensor, eps: Noise):
    """-sum_n ELBO_beta(x_n) with the analytic KL where one exists (one particle)."""
    _one_particle(elbo)
    return _elbo_loss(vae, elbo, x, eps, analytic=True)


@register_reference(MonteCarloELBO)
def monte_carlo_elbo_loss(vae: nn.Module, elbo: MonteCarloELBO, x: torch.Tensor, eps: Noise):
    """Trace_ELBO's sync-free twin: the Monte Carlo KL, K particles vectorised."""
    return _elbo_loss(vae, elbo, x, eps, analytic=False)


@register_reference(MeanFieldELBO)
def sync_free_mean_field_loss(vae: nn.Module, elbo: MeanFieldELBO, x: torch.Tensor, eps: Noise):
    """TraceMeanField_ELBO's sync-free twin: the analytic KL, K particles vectorised."""
    return _elbo_loss(vae, elbo, x, eps, analytic=True)


register_no_reference(
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    reason="it is for a model with a discrete site, whose own reference checks it (a class "
    "variable: reference_class_variable; the invariant model's turns: reference_invariant)",
)


def _two_layer_noise(vae: nn.Module, x: torch.Tensor, z: tuple[torch.Tensor, torch.Tensor]):
    z1, z2 = z
    loc1, scale1 = vae.encoder(x)
    loc2, scale2 = vae.upper_encoder(z1)
    return (z1 - loc1) / scale1, (z2 - loc2) / scale2


def reference_loss(vae: nn.Module, elbo: object, x: torch.Tensor, z: torch.Tensor):
    """The hand-written loss that ``elbo`` estimates, at the guide's sample ``z``.

    The guide family recovers the noise eps (for the diagonal Gaussian, (z - loc) / scale),
    and the reference registered for the estimator's class (the most specific in its MRO,
    :func:`~pyro_vae.checks.references.find_reference`) redraws z from it by hand: Monte Carlo
    KL for ``Trace_ELBO`` (and its sync-free twin), analytic KL where one exists for
    ``TraceMeanField_ELBO`` (and twin), the K-particle bound for ``IWAE`` (whose value does not
    depend on the gradient estimator; compare gradients with :func:`reference_iwae_gradients`)
    and the rest of its family (:mod:`pyro_vae.checks.reference_bounds`), free bits or
    capacity for the KL-shaping objectives; :class:`MissingReference` for a class with none.
    For a model with a class variable ``z`` is all the guide drew, and the reference is
    :func:`~pyro_vae.checks.reference_class_variable.reference_class_loss`, whatever the estimator.
    """
    if isinstance(vae, JointVAE):  # a class variable: the draws are (y, z[, z_labelled])
        return reference_class_loss(vae, x, z)
    reference = find_reference(elbo)
    with torch.no_grad():
        eps = (
            _two_layer_noise(vae, x, z)
            if is_two_layer(vae)
            else (vae.q.noise(vae.encoder, x, z.detach()))
        )
    return reference(vae, elbo, x, eps)
