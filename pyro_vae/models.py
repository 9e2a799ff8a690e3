"""Model structures by name: the one-layer VAE (with any likelihood, prior and guide family,
conditional on a context if asked) and the two-stochastic-layer VAE. A config's ``model``
picks one; ``build_model`` builds it."""

from __future__ import annotations

from collections.abc import Sequence

from .conditional import build_conditional_vae
from .hierarchical import build_two_layer_vae
from .model import VAE, build_vae
from .registry import Registry

MODELS: Registry[VAE] = Registry("model")
MODELS.register("vae")(build_vae)
MODELS.register("two-layer")(build_two_layer_vae)


def build_model(
    data_shape: Sequence[int],
    model: str = "vae",
    context: str = "none",
    context_dim: int = 0,
    **options: object,
) -> VAE:
    """The named structure, given the options it takes (see each builder); a ``context`` other
    than "none" makes the one-layer VAE conditional (:mod:`pyro_vae.conditional`)."""
    if context != "none":
        if model != "vae":
            raise ValueError(f"a context conditions the one-layer VAE, not {model!r}")
        return build_conditional_vae(
            data_shape, context=context, context_dim=context_dim, **options
        )
    return MODELS.create(model, data_shape, **options)
