"""The generative story and its guide: networks, likelihoods, priors, guides, the VAE and its
variants (conditional, two stochastic layers, the plain autoencoder), and the builders."""

from .build import MODELS, build_model, build_vae
from .conditional import ConditionalVAE
from .guides import GUIDES, Guide
from .likelihoods import LIKELIHOODS, DataSupportError, Likelihood
from .nets import NETWORKS, NetworkShapeError
from .priors import PRIORS, Prior
from .two_layer import TwoLayerVAE, build_two_layer_vae
from .vae import VAE, Autoencoder, kl_weight

__all__ = [
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
    "Likelihood",
    "NetworkShapeError",
    "Prior",
    "TwoLayerVAE",
    "build_model",
    "build_two_layer_vae",
    "build_vae",
    "kl_weight",
]
