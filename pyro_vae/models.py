"""Model structures by name: the one-layer VAE (with any likelihood, prior and guide family) and
the two-stochastic-layer VAE. A config's ``model`` picks one; ``build_model`` builds it."""

from __future__ import annotations

from collections.abc import Sequence

from .hierarchical import build_two_layer_vae
from .model import VAE, build_vae
from .registry import Registry

MODELS: Registry[VAE] = Registry("model")
MODELS.register("vae")(build_vae)
MODELS.register("two-layer")(build_two_layer_vae)


def build_model(data_shape: Sequence[int], model: str = "vae", **options: object) -> VAE:
    """The named structure, given the options it takes (see each builder)."""
    return MODELS.create(model, data_shape, **options)
