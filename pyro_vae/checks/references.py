"""Hand-written references by estimator class, registered as ``torch.distributions.kl``
registers a KL divergence (``register_kl``).

A reference is a function ``(vae, elbo, x, eps) -> loss``: the batch loss that ``elbo``'s
``differentiable_loss`` estimates, written by hand from the VAE's networks, at the noise eps
the guide drew each latent from (shape (P N, z_dim) for P particles of N images, or the pair
(eps1, eps2) for two stochastic layers). One is registered against an estimator class::

    @register_reference(IWAE)
    def iwae_loss(vae, elbo, x, eps):
        return -reference_miwae(vae, x, as_particles(eps, elbo.num_particles, len(x)), ...)

and :func:`find_reference` walks the MRO of the estimator's class to the most specific one: a
subclass of ``IWAE`` with a reference of its own (``RenyiBound``) takes that one, one without
(``MIWAE``, or a user's subclass) takes IWAE's. An estimator class whose loss depends on the
model's discrete site (``TraceEnum_ELBO``, the score function) is declared with
:func:`register_no_reference`: the model's own reference checks it, and a model without one is
refused with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Noise = torch.Tensor | tuple[torch.Tensor, ...]
Reference = Callable[[nn.Module, object, torch.Tensor, Noise], torch.Tensor]


class MissingReference(ValueError):
    """A likelihood, prior, guide or estimator has no hand-written counterpart."""


class _None:
    """An estimator class declared to have no reference of its own, and why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


_REFERENCES: dict[type, Reference | _None] = {}


def _register(classes: tuple[type, ...], entry: Reference | _None) -> None:
    if not classes:
        raise TypeError("name at least one estimator class")
    for cls in classes:
        if not isinstance(cls, type):
            raise TypeError(f"expected an estimator class, got {cls!r}")
        if cls in _REFERENCES:
            raise ValueError(f"{cls.__name__} has a hand-written reference already")
        _REFERENCES[cls] = entry


def register_reference(*classes: type) -> Callable[[Reference], Reference]:
    """Decorator: the hand-written loss of estimators of ``classes`` (and their subclasses
    that have no reference of their own)."""

    def decorate(reference: Reference) -> Reference:
        _register(classes, reference)
        return reference

    return decorate


def register_no_reference(*classes: type, reason: str) -> None:
    """Declare that estimators of ``classes`` have no reference of their own, and why; the
    check refuses them with ``reason`` (unless the model's own reference covers them)."""
    _register(classes, _None(reason))


def find_reference(elbo: object) -> Reference:
    """The reference registered for the most specific class in ``type(elbo).__mro__``;
    :class:`MissingReference` if there is none, or if that class was declared to have none."""
    for cls in type(elbo).__mro__:
        entry = _REFERENCES.get(cls)
        if isinstance(entry, _None):
            raise MissingReference(
                f"no hand-written reference for {type(elbo).__name__}: {entry.reason}"
            )
        if entry is not None:
            return entry
    raise MissingReference(f"no hand-written reference for {type(elbo).__name__}")


def as_particles(eps: Noise, particles: int, n: int) -> Noise:
    """eps (or each of a tuple of eps) reshaped to (particles, n, latent size)."""
    if isinstance(eps, tuple):
        return tuple(e.reshape(particles, n, e.shape[-1]) for e in eps)
    return eps.reshape(particles, n, eps.shape[-1])
