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

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from .version import __version__ as __version__

if TYPE_CHECKING:
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
    from .workflow import train

# Where each public name lives. They are imported on first use (PEP 562): ``import pyro_vae``,
# and with it every ``pyro-vae`` command, starts without torch, Pyro or the package's modules,
# and each command imports what it uses.
_HOMES: dict[str, str] = {
    "check_against_reference": ".checks",
    **dict.fromkeys(("DATASETS", "ImageData", "load_dataset"), ".data"),
    **dict.fromkeys(
        (
            "CIWAE",
            "ESTIMATORS",
            "IWAE",
            "MIWAE",
            "PIWAE",
            "CapacityELBO",
            "FreeBitsELBO",
            "GeometricRamp",
            "KLWarmup",
            "LinearRamp",
            "RenyiBound",
            "ScoreFunctionELBO",
            "active_units",
            "evaluate_elbo",
            "kl_per_dimension",
            "log_likelihood",
            "make_estimator",
            "posterior_means",
        ),
        ".inference",
    ),
    **dict.fromkeys(
        (
            "GUIDES",
            "LIKELIHOODS",
            "MODELS",
            "NETWORKS",
            "PRIORS",
            "VAE",
            "Autoencoder",
            "ConditionalVAE",
            "Guide",
            "InvariantVAE",
            "JointVAE",
            "Likelihood",
            "Prior",
            "PyroProgram",
            "SemiSupervisedVAE",
            "TwoLayerVAE",
            "build_model",
            "build_vae",
            "kl_weight",
        ),
        ".model",
    ),
    **dict.fromkeys(
        ("LoadedRun", "TrainConfig", "TrainResult", "evaluate_run", "load_run"), ".training"
    ),
    "train": ".workflow",
}


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use and kept; or a subpackage
    (``pyro_vae.model``), which ``import pyro_vae`` alone does not import."""
    home = _HOMES.get(name)
    if home is not None:
        value = getattr(importlib.import_module(home, __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names before their first use, too."""
    return sorted(set(globals()) | set(__all__))


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
