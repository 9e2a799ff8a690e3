"""Estimators by name: which ELBO estimates the loss.

With q = q(z|x), the per-image evidence lower bound is

    ELBO(x) = E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)) <= log p(x)   (beta = 1)

- ``trace`` -> :class:`pyro.infer.Trace_ELBO`: one reparameterised sample estimates both
  terms, KL included (log q(z|x) - log p(z) at that sample).
- ``mean-field`` -> :class:`pyro.infer.TraceMeanField_ELBO`: the same reconstruction term with
  the KL in closed form where torch knows it (Gaussian guide vs Gaussian prior); otherwise it
  falls back to the Monte Carlo KL, exactly as ``trace`` does.
- ``iwae`` -> :class:`pyro_vae.inference.iwae.IWAE`: the K-particle importance-weighted bound
  with a ``standard``, ``stl`` or ``dreg`` gradient (``num_particles`` = K).
- ``free-bits`` and ``capacity`` -> :mod:`pyro_vae.inference.kl_shaping`: the KL term
  reshaped against posterior collapse (a floor per latent dimension; a target rate C).

They know traces, not the VAE, so any model/guide pair trains. An estimator's options are the
keyword-only parameters of its factory: one it does not take is refused (``grad`` means
nothing to ``trace``; free bits and capacity use one particle and take no ``num_particles``).
"""

from __future__ import annotations

from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO

from ..registry import Registry
from .iwae import IWAE
from .kl_shaping import CapacityELBO, FreeBitsELBO

ESTIMATORS: Registry[ELBO] = Registry("estimator")


@ESTIMATORS.register("trace")
def trace_elbo(*, num_particles: int = 1) -> ELBO:
    """Monte Carlo KL (Kingma & Welling, 2014, eq. 6)."""
    return Trace_ELBO(num_particles=num_particles, max_plate_nesting=1)


@ESTIMATORS.register("mean-field")
def mean_field_elbo(*, num_particles: int = 1) -> ELBO:
    """Analytic KL where available (Kingma & Welling, 2014, eq. 7)."""
    return TraceMeanField_ELBO(num_particles=num_particles, max_plate_nesting=1)


@ESTIMATORS.register("free-bits")
def free_bits_elbo(*, free_bits: float = 0.5) -> ELBO:
    """Analytic KL with a floor of ``free_bits`` nats per latent dimension (Kingma et al., 2016)."""
    return FreeBitsELBO(free_bits)


@ESTIMATORS.register("capacity")
def capacity_elbo(*, capacity: float = 25.0, capacity_gamma: float = 100.0) -> ELBO:
    """gamma |KL - C| with C = ``capacity`` nats (Burgess et al., 2018)."""
    return CapacityELBO(capacity, capacity_gamma)


@ESTIMATORS.register("iwae")
def iwae(*, num_particles: int = 5, grad: str = "standard") -> ELBO:
    """Importance-weighted bound (Burda et al., 2016) over K = num_particles samples."""
    return IWAE(num_particles=num_particles, grad=grad, max_plate_nesting=1)


def make_estimator(
    name: str, num_particles: int | None = None, grad: str | None = None, **options: object
) -> ELBO:
    """The named estimator with the options given (each must be one the estimator takes;
    those left out take the estimator's defaults: 5 particles for ``iwae``, else 1)."""
    if num_particles is not None:
        if num_particles < 1:
            raise ValueError(f"particles must be >= 1, got {num_particles}")
        options["num_particles"] = num_particles
    if grad is not None:
        options["grad"] = grad
    return ESTIMATORS.create(name, **options)
