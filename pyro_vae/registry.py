"""A name -> class registry, the one mechanism behind likelihoods, priors, networks and datasets.

Adding a family is one decorated class::

    @LIKELIHOODS.register("poisson")
    class Poisson(Likelihood): ...

Unknown names fail with a message that lists the valid ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that is not in a registry; the message lists the valid names."""


class Registry(Generic[T]):
    """Maps names to factories (usually classes) of one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Class decorator: ``@REGISTRY.register("name")``."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = factory
            factory.registry_name = name  # type: ignore[attr-defined]
            return factory

        return decorate

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def create(self, name: str, *args: Any, **options: Any) -> T:
        """Build ``name`` with ``args`` and those ``options`` its constructor accepts.

        Options are shared across a whole config (``sigma`` means nothing to ``bernoulli``),
        so keywords the factory does not take are dropped rather than raising.
        """
        factory = self.get(name)
        params = inspect.signature(factory).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            options = {k: v for k, v in options.items() if k in params}
        return factory(*args, **options)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
