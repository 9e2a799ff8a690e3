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
- ``enum`` -> :class:`pyro.infer.TraceEnum_ELBO`: a discrete guide site marked for
  enumeration is summed out exactly; ``score-function`` ->
  :class:`pyro_vae.inference.score_function.ScoreFunctionELBO` (``TraceGraph_ELBO``): REINFORCE
  with baselines. Both are for models with a class variable (:mod:`pyro_vae.model.class_variable`).
- ``free-bits`` and ``capacity`` -> :mod:`pyro_vae.inference.kl_shaping`: the KL term
  reshaped against posterior collapse (a floor per latent dimension; a target rate C).
- ``renyi``, ``miwae``, ``piwae``, ``ciwae`` -> :mod:`pyro_vae.inference.bounds`: the rest of
  the importance-weighted family (VR-alpha; M groups of K particles; IWAE_{MK} for the model
  with MIWAE for the guide; an ELBO/IWAE mixture), per datapoint like ``iwae``.

They know traces, not the VAE, so any model/guide pair trains. An estimator's options are the
keyword-only parameters of its factory: one it does not take is refused (``grad`` means
nothing to ``trace``; free bits and capacity use one particle and take no ``num_particles``).
What the option rules need to know besides (which models it can take) is declared with it, as
:class:`EstimatorTraits`. Adding an estimator is its class, its registration here (or in a
plug-in's own module) with its traits, and its hand-written reference
(:func:`pyro_vae.checks.register_reference`); nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

from ..registry import Registry
from .bounds import CIWAE, MIWAE, PIWAE, RenyiBound
from .iwae import IWAE
from .kl_shaping import CapacityELBO, FreeBitsELBO
from .score_function import ScoreFunctionELBO


@dataclass(frozen=True)
class EstimatorTraits:
    """What the option rules (:mod:`pyro_vae.training.rules`) read of an estimator. What it
    takes (``grad``, ``num_particles``, ...) is not here: that is its factory's keyword-only
    parameters. The defaults are the cautious ones, for an estimator registered without any.

    Attributes:
        sampled_kl: it estimates the KL of the whole guide by sampling, log q(z|x) - log p(z)
            at the draws, so it takes a guide in which one latent site depends on another
            (z2 on z1 in the two-layer model), where no per-site analytic KL exists.
        kl_per_dimension: it reshapes the KL of each latent dimension, in closed form: it needs
            a factorised (diagonal) Gaussian guide and a prior with a per-dimension analytic KL.
        needs_discrete_site: it sums out or scores a discrete latent site, and is for a model
            that has one.
    """

    sampled_kl: bool = False
    kl_per_dimension: bool = False
    needs_discrete_site: bool = False


class EstimatorRegistry(Registry[ELBO]):
    """The estimators by name, each registered with its :class:`EstimatorTraits`."""

    def register(  # type: ignore[override]
        self, name: str, traits: EstimatorTraits | None = None, *, override: bool = False
    ) -> Callable[[Callable[..., ELBO]], Callable[..., ELBO]]:
        """Decorator: ``@ESTIMATORS.register("name", EstimatorTraits(...))`` on a factory whose
        keyword-only parameters are the estimator's options (``override``: replace a
        registered one on purpose)."""
        add = super().register(name, override=override)

        def decorate(factory: Callable[..., ELBO]) -> Callable[..., ELBO]:
            factory = add(factory)
            factory.traits = traits or EstimatorTraits()  # type: ignore[attr-defined]
            return factory

        return decorate

    def traits(self, name: str) -> EstimatorTraits:
        """The traits the named estimator was registered with."""
        return getattr(self.get(name), "traits", EstimatorTraits())

    def having(self, trait: str) -> list[str]:
        """The names of the estimators with ``trait``, in registration order."""
        if trait not in {f.name for f in fields(EstimatorTraits)}:
            raise ValueError(f"no estimator trait {trait!r}")
        return [name for name in self if getattr(self.traits(name), trait)]


ESTIMATORS = EstimatorRegistry("estimator")


@ESTIMATORS.register("trace", EstimatorTraits(sampled_kl=True))
def trace_elbo(*, num_particles: int = 1) -> ELBO:
    """Monte Carlo KL (Kingma & Welling, 2014, eq. 6)."""
    return Trace_ELBO(num_particles=num_particles, max_plate_nesting=1)


@ESTIMATORS.register("mean-field")
def mean_field_elbo(*, num_particles: int = 1) -> ELBO:
    """Analytic KL where available (Kingma & Welling, 2014, eq. 7)."""
    return TraceMeanField_ELBO(num_particles=num_particles, max_plate_nesting=1)


@ESTIMATORS.register("enum", EstimatorTraits(needs_discrete_site=True))
def enum_elbo(*, num_particles: int = 1) -> ELBO:
    """Trace_ELBO with guide sites marked ``infer={"enumerate": "parallel"}`` summed out
    exactly over their values (Pyro's ``TraceEnum_ELBO``): a class variable's exact sum."""
    return TraceEnum_ELBO(num_particles=num_particles, max_plate_nesting=1)


@ESTIMATORS.register("score-function", EstimatorTraits(needs_discrete_site=True))
def score_function_elbo(*, num_particles: int = 1) -> ELBO:
    """Score-function gradients with baselines for non-reparameterisable sites, downstream
    costs only (Pyro's ``TraceGraph_ELBO``; :mod:`pyro_vae.inference.score_function`)."""
    return ScoreFunctionELBO(num_particles=num_particles, max_plate_nesting=1)


@ESTIMATORS.register("free-bits", EstimatorTraits(kl_per_dimension=True))
def free_bits_elbo(*, free_bits: float = 0.5) -> ELBO:
    """Analytic KL with a floor of ``free_bits`` nats per latent dimension (Kingma et al., 2016)."""
    return FreeBitsELBO(free_bits)


@ESTIMATORS.register("capacity", EstimatorTraits(kl_per_dimension=True))
def capacity_elbo(*, capacity: float = 25.0, capacity_gamma: float = 100.0) -> ELBO:
    """gamma |KL - C| with C = ``capacity`` nats (Burgess et al., 2018)."""
    return CapacityELBO(capacity, capacity_gamma)


@ESTIMATORS.register("iwae", EstimatorTraits(sampled_kl=True))
def iwae(*, num_particles: int = 5, grad: str = "standard") -> ELBO:
    """Importance-weighted bound (Burda et al., 2016) over K = num_particles samples."""
    return IWAE(num_particles=num_particles, grad=grad, max_plate_nesting=1)


@ESTIMATORS.register("renyi", EstimatorTraits(sampled_kl=True))
def renyi(*, num_particles: int = 5, alpha: float = 0.5) -> ELBO:
    """VR-alpha bound (Li & Turner, 2016), 0 <= alpha < 1, over K = num_particles samples."""
    return RenyiBound(num_particles=num_particles, alpha=alpha, max_plate_nesting=1)


@ESTIMATORS.register("miwae", EstimatorTraits(sampled_kl=True))
def miwae(*, num_particles: int = 5, groups: int = 4, grad: str = "standard") -> ELBO:
    """MIWAE(M, K) (Rainforth et al., 2018): M = groups IWAE_K bounds averaged, K = num_particles
    (M K samples per datapoint)."""
    return MIWAE(num_particles=num_particles, groups=groups, grad=grad, max_plate_nesting=1)


@ESTIMATORS.register("piwae", EstimatorTraits(sampled_kl=True))
def piwae(*, num_particles: int = 5, groups: int = 4) -> ELBO:
    """PIWAE(M, K) (Rainforth et al., 2018): IWAE_{MK} gradients for the model, MIWAE(M, K)
    gradients for the guide."""
    return PIWAE(num_particles=num_particles, groups=groups, max_plate_nesting=1)


@ESTIMATORS.register("ciwae", EstimatorTraits(sampled_kl=True))
def ciwae(*, num_particles: int = 5, mix: float = 0.5) -> ELBO:
    """CIWAE (Rainforth et al., 2018): mix ELBO + (1 - mix) IWAE_K on the same K samples."""
    return CIWAE(num_particles=num_particles, mix=mix, max_plate_nesting=1)


def make_estimator(
    name: str, num_particles: int | None = None, grad: str | None = None, **options: object
) -> ELBO:
    """The named estimator with the options given (each must be one the estimator takes;
    those left out take the estimator's defaults: 5 particles for ``iwae`` and the rest of
    the importance-weighted family, else 1)."""
    if num_particles is not None:
        if num_particles < 1:
            raise ValueError(f"particles must be >= 1, got {num_particles}")
        options["num_particles"] = num_particles
    if grad is not None:
        options["grad"] = grad
    return ESTIMATORS.create(name, **options)
