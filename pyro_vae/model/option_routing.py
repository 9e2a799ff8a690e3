"""Which part of a model takes which option.

A model is assembled from parts chosen by name (network, likelihood, prior, guide, and the
class site's treatment for the class-latent models), each a
family in a registry whose options are its keyword-only constructor parameters. An option
goes to every chosen part that takes it (``hidden`` to the MLP, ``sigma`` to the Gaussian
likelihood, ``rank`` to the low-rank guide); one that no chosen part takes is refused, never
dropped. This is the one rule by which ``build_vae``, the two-layer builder and the training
options (``pyro_vae.training.options``) decide where an option applies.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..registry import OptionError, Registry
from .discrete_sites import DISCRETE_SITES
from .guides import GUIDES
from .likelihoods import LIKELIHOODS
from .nets import NETWORKS
from .priors import PRIORS

PART_REGISTRIES: dict[str, Registry] = {
    "network": NETWORKS,
    "likelihood": LIKELIHOODS,
    "prior": PRIORS,
    "guide": GUIDES,
    "discrete": DISCRETE_SITES,
}


def route(model: str, options: Mapping[str, object], **chosen: str) -> dict[str, dict]:
    """``options`` split by the chosen parts (``likelihood="gaussian"``, ...) that take them."""
    routed: dict[str, dict] = {part: {} for part in chosen}
    for option, value in options.items():
        takers = [
            part for part, name in chosen.items() if option in PART_REGISTRIES[part].options(name)
        ]
        if not takers:
            offered = "; ".join(
                f"{part} {name!r}: {', '.join(PART_REGISTRIES[part].options(name)) or '-'}"
                for part, name in chosen.items()
            )
            raise OptionError(
                f"no part of this {model} model takes the option {option!r} ({offered})"
            )
        for part in takers:
            routed[part][option] = value
    return routed


def takers(option: str) -> dict[str, list[str]]:
    """Every registered part that takes ``option``, by kind (for messages)."""
    return {
        part: [name for name in registry if option in registry.options(name)]
        for part, registry in PART_REGISTRIES.items()
    }
