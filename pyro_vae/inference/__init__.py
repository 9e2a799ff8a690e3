"""Objectives and measures: the estimators registry (Pyro's ELBOs, IWAE with standard, STL and
DReG gradients, the rest of its family: VR-alpha, MIWAE, PIWAE, CIWAE; KL shaping, sync-free
twins), schedules, and what a trained model is measured by (ELBO terms, importance-sampled
log p(x), active units, KL per dimension).

Nothing here knows the ``VAE`` class: objectives and measures read Pyro traces, so any
``model(x)`` / ``guide(x)`` pair whose latent sites live in ``plate("data")`` works."""

from .bounds import CIWAE, MIWAE, PIWAE, RenyiBound
from .elbo_terms import ElboTerms, elbo_terms_per_image, evaluate_elbo
from .estimators import ESTIMATORS, EstimatorTraits, make_estimator
from .iwae import IWAE, IWAE_GRADIENTS
from .kl_shaping import CapacityELBO, FreeBitsELBO
from .latents import active_units, kl_per_dimension, posterior_means
from .log_likelihood import (
    ImportanceSampler,
    LogLikelihood,
    importance_log_weights,
    log_likelihood,
)
from .schedules import GeometricRamp, KLWarmup, LinearRamp
from .score_function import ScoreFunctionELBO
from .sync_free import MeanFieldELBO, MonteCarloELBO, sync_free

__all__ = [
    "CIWAE",
    "ESTIMATORS",
    "IWAE",
    "IWAE_GRADIENTS",
    "ImportanceSampler",
    "CapacityELBO",
    "ElboTerms",
    "EstimatorTraits",
    "FreeBitsELBO",
    "GeometricRamp",
    "KLWarmup",
    "LinearRamp",
    "LogLikelihood",
    "MIWAE",
    "MeanFieldELBO",
    "MonteCarloELBO",
    "PIWAE",
    "ScoreFunctionELBO",
    "RenyiBound",
    "active_units",
    "elbo_terms_per_image",
    "evaluate_elbo",
    "importance_log_weights",
    "kl_per_dimension",
    "log_likelihood",
    "make_estimator",
    "posterior_means",
    "sync_free",
]
