"""pyro-vae: variational autoencoders written as Pyro models, trained by SVI, checked by hand.

Building: ``build_vae`` / ``build_model`` from registered parts (``LIKELIHOODS``, ``PRIORS``,
``GUIDES``, ``NETWORKS``, ``MODELS``); a new part is one class registered by name. Objectives:
``make_estimator`` and ``ESTIMATORS`` (Pyro's ELBOs, IWAE with STL/DReG and the rest of its
family: ``RenyiBound``, ``MIWAE``, ``PIWAE``, ``CIWAE``; KL shaping: ``FreeBitsELBO``,
``CapacityELBO``; ``ScoreFunctionELBO``), schedules (``LinearRamp``, ``GeometricRamp``,
``KLWarmup``). Models: ``VAE`` and the classes ``MODELS`` builds (``TwoLayerVAE``,
``JointVAE``, ``SemiSupervisedVAE``, ``InvariantVAE``; ``ConditionalVAE``, ``Autoencoder``).
Every class of the package's registries is reachable here or in ``pyro_vae.model`` /
``pyro_vae.inference``. Runs:
``train`` (a whole run, as ``pyro-vae train``), ``load_run``, ``evaluate_run``. Measures:
``evaluate_elbo``, ``log_likelihood``, ``active_units``, ``kl_per_dimension``. Checks:
``check_against_reference`` (Pyro's loss against the hand-written one).
"""

from .checks import check_against_reference
from .data import DATASETS, ImageData, load_dataset
from .inference import (
    CIWAE,
    ESTIMATORS,
    IWAE,
    MIWAE,
    PIWAE,
    CapacityELBO,
    FreeBitsELBO,
    GeometricRamp,
    KLWarmup,
    LinearRamp,
    RenyiBound,
    ScoreFunctionELBO,
    active_units,
    evaluate_elbo,
    kl_per_dimension,
    log_likelihood,
    make_estimator,
    posterior_means,
)
from .model import (
    GUIDES,
    LIKELIHOODS,
    MODELS,
    NETWORKS,
    PRIORS,
    VAE,
    Autoencoder,
    ConditionalVAE,
    Guide,
    InvariantVAE,
    JointVAE,
    Likelihood,
    Prior,
    PyroProgram,
    SemiSupervisedVAE,
    TwoLayerVAE,
    build_model,
    build_vae,
    kl_weight,
)
from .training import LoadedRun, TrainConfig, TrainResult, evaluate_run, load_run
from .version import __version__ as __version__
from .workflow import train

__all__ = [
    "Autoencoder",
    "CIWAE",
    "CapacityELBO",
    "ConditionalVAE",
    "FreeBitsELBO",
    "GeometricRamp",
    "InvariantVAE",
    "JointVAE",
    "ScoreFunctionELBO",
    "SemiSupervisedVAE",
    "TwoLayerVAE",
    "DATASETS",
    "ESTIMATORS",
    "GUIDES",
    "IWAE",
    "LIKELIHOODS",
    "MIWAE",
    "MODELS",
    "NETWORKS",
    "PIWAE",
    "PRIORS",
    "VAE",
    "Guide",
    "ImageData",
    "KLWarmup",
    "Likelihood",
    "LinearRamp",
    "LoadedRun",
    "Prior",
    "PyroProgram",
    "RenyiBound",
    "TrainConfig",
    "TrainResult",
    "active_units",
    "build_model",
    "build_vae",
    "check_against_reference",
    "evaluate_elbo",
    "evaluate_run",
    "kl_per_dimension",
    "kl_weight",
    "load_dataset",
    "load_run",
    "log_likelihood",
    "make_estimator",
    "posterior_means",
    "train",
]
