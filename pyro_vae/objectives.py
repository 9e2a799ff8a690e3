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

Both are Pyro's own classes; they know traces, not the VAE, so any model/guide pair trains.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO

from .iwae import IWAE
from .registry import Registry

ESTIMATORS: Registry[ELBO] = Registry("estimator")


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


@ESTIMATORS.register("iwae")
def iwae(num_particles: int = 5, grad: str = "standard") -> ELBO:
    """Importance-weighted bound (Burda et al., 2016) over K = num_particles samples."""
    return IWAE(num_particles=num_particles, grad=grad, max_plate_nesting=1)


def make_estimator(name: str, num_particles: int = 1, grad: str = "standard") -> ELBO:
    if num_particles < 1:
        raise ValueError(f"particles must be >= 1, got {num_particles}")
    return ESTIMATORS.create(name, num_particles=num_particles, grad=grad)


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
