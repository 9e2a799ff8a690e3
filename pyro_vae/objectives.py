"""Training objectives: which Pyro ELBO estimates the loss, and how beta moves during training.

With q = q(z|x), the per-image evidence lower bound is

    ELBO(x) = E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)) <= log p(x)   (beta = 1)

- ``trace`` -> :class:`pyro.infer.Trace_ELBO`: one reparameterised sample estimates both
  terms, KL included (log q(z|x) - log p(z) at that sample).
- ``mean-field`` -> :class:`pyro.infer.TraceMeanField_ELBO`: the same reconstruction term with
  the KL in closed form where torch knows it (Gaussian guide vs Gaussian prior); otherwise it
  falls back to the Monte Carlo KL, exactly as ``trace`` does.
- ``iwae`` -> :class:`pyro_vae.iwae.IWAE`: the K-particle importance-weighted bound with a
  ``standard``, ``stl`` or ``dreg`` gradient (``num_particles`` = K).
- ``free-bits`` and ``capacity`` -> :mod:`pyro_vae.kl_shaping`: the KL term reshaped against
  posterior collapse (a floor per latent dimension; a target rate C).

Both are Pyro's own classes; they know traces, not the VAE, so any model/guide pair trains.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO

from .iwae import IWAE
from .kl_shaping import CapacityELBO, FreeBitsELBO
from .registry import Registry

ESTIMATORS: Registry[ELBO] = Registry("estimator")


def _one_particle(name: str, num_particles: int) -> None:
    if num_particles != 1:
        raise ValueError(f"the {name} estimator uses one particle, got {num_particles}")


def _single_sample_gradient(name: str, grad: str) -> None:
    if grad != "standard":
        raise ValueError(f"--grad {grad} applies to the iwae estimator only, not {name!r}")


@ESTIMATORS.register("trace")
def trace_elbo(num_particles: int = 1, grad: str = "standard") -> ELBO:
    """Monte Carlo KL (Kingma & Welling, 2014, eq. 6)."""
    _single_sample_gradient("trace", grad)
    return Trace_ELBO(num_particles=num_particles, max_plate_nesting=1)


@ESTIMATORS.register("mean-field")
def mean_field_elbo(num_particles: int = 1, grad: str = "standard") -> ELBO:
    """Analytic KL where available (Kingma & Welling, 2014, eq. 7)."""
    _single_sample_gradient("mean-field", grad)
    return TraceMeanField_ELBO(num_particles=num_particles, max_plate_nesting=1)


@ESTIMATORS.register("free-bits")
def free_bits_elbo(num_particles: int = 1, grad: str = "standard", free_bits: float = 0.5) -> ELBO:
    """Analytic KL with a floor of ``free_bits`` nats per latent dimension (Kingma et al., 2016)."""
    _single_sample_gradient("free-bits", grad)
    _one_particle("free-bits", num_particles)
    return FreeBitsELBO(free_bits)


@ESTIMATORS.register("capacity")
def capacity_elbo(
    num_particles: int = 1,
    grad: str = "standard",
    capacity: float = 25.0,
    capacity_gamma: float = 100.0,
    capacity_steps: int = 0,
) -> ELBO:
    """gamma |KL - C| with C annealed to ``capacity`` nats (Burgess et al., 2018)."""
    _single_sample_gradient("capacity", grad)
    _one_particle("capacity", num_particles)
    return CapacityELBO(capacity, capacity_gamma, capacity_steps)


@ESTIMATORS.register("iwae")
def iwae(num_particles: int = 5, grad: str = "standard") -> ELBO:
    """Importance-weighted bound (Burda et al., 2016) over K = num_particles samples."""
    return IWAE(num_particles=num_particles, grad=grad, max_plate_nesting=1)


def make_estimator(
    name: str, num_particles: int = 1, grad: str = "standard", **options: object
) -> ELBO:
    """The named estimator; ``options`` (free_bits, capacity, ...) go where they apply.

    An option no estimator takes is an error rather than silently dropped (``particles=4``
    for ``num_particles=4`` would otherwise train with one particle)."""
    known = {
        name for entry in ESTIMATORS for name in inspect.signature(ESTIMATORS.get(entry)).parameters
    }
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(
            f"make_estimator got unknown option(s) {', '.join(unknown)}; estimators take: "
            f"num_particles, grad, {', '.join(sorted(known - {'num_particles', 'grad'}))}"
        )
    if num_particles < 1:
        raise ValueError(f"particles must be >= 1, got {num_particles}")
    return ESTIMATORS.create(name, num_particles=num_particles, grad=grad, **options)


@dataclass(frozen=True)
class KLWarmup:
    """Linear KL warm-up (Bowman et al., 2016; Sønderby et al., 2016):
    beta_t = beta * min(1, t / warmup_steps), starting from beta_0 = 0 at step 0.

    ``warmup_steps = 0`` means no warm-up: beta_t = beta throughout.
    """

    beta: float = 1.0
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.warmup_steps < 0:
            raise ValueError(f"warm-up steps must be >= 0, got {self.warmup_steps}")

    def __call__(self, step: int) -> float:
        if self.warmup_steps == 0 or step >= self.warmup_steps:
            return self.beta
        return self.beta * step / self.warmup_steps
