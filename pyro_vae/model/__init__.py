"""The generative story and its guide: networks, likelihoods, priors, guides, the VAE and its
variants (conditional, two stochastic layers, the plain autoencoder, a class variable beside z:
joint and semi-supervised; the pose-invariant VAE), and the builders."""

from .build import MODELS, build_model, build_vae
from .class_variable import JointVAE, SemiSupervisedVAE
from .conditional import ConditionalVAE
from .discrete_sites import DISCRETE_SITES
from .discretized_logistic import DiscretizedLogisticLikelihood  # noqa: F401 (registers it)
from .guides import GUIDES, Guide
from .invariant import InvariantVAE, build_invariant_vae
from .likelihoods import LIKELIHOODS, DataSupportError, Likelihood
from .nets import NETWORKS, NetworkShapeError
from .priors import PRIORS, Prior
from .program import PyroProgram, as_vae
from .two_layer import TwoLayerVAE, build_two_layer_vae
from .vae import VAE, Autoencoder, kl_weight

__all__ = [
    "DISCRETE_SITES",
    "GUIDES",
    "LIKELIHOODS",
    "MODELS",
    "NETWORKS",
    "PRIORS",
    "VAE",
    "Autoencoder",
    "ConditionalVAE",
    "DataSupportError",
    "Guide",
    "InvariantVAE",
    "JointVAE",
    "Likelihood",
    "NetworkShapeError",
    "Prior",
    "PyroProgram",
    "SemiSupervisedVAE",
    "TwoLayerVAE",
    "as_vae",
    "build_invariant_vae",
    "build_model",
    "build_two_layer_vae",
    "build_vae",
    "kl_weight",
]
