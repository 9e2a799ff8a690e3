"""pyro-vae: variational autoencoders written as Pyro models, trained by SVI, checked by hand."""

from . import synthetic  # noqa: F401  (registers the synthetic-counts dataset)
from .likelihoods import LIKELIHOODS, Likelihood
from .model import VAE, build_vae, kl_weight
from .nets import NETWORKS
from .objectives import ESTIMATORS, KLWarmup, make_estimator
from .priors import PRIORS, Prior

__all__ = [
    "ESTIMATORS",
    "LIKELIHOODS",
    "NETWORKS",
    "PRIORS",
    "VAE",
    "KLWarmup",
    "Likelihood",
    "Prior",
    "build_vae",
    "kl_weight",
    "make_estimator",
]
__version__ = "0.1.0"
