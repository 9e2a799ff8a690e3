"""A name -> class registry, the one mechanism behind likelihoods, priors, guides, networks,
models, estimators, datasets and studies.

Adding a family is one decorated class::

    @LIKELIHOODS.register("poisson")
    class Poisson(Likelihood): ...

Unknown names fail with a message that lists the valid ones. A family's options are the
keyword parameters of its constructor: ``create`` refuses an option the family does not take,
and builders route each option to the parts that take it (:func:`takes`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that is not in a registry; the message lists the valid names."""


class OptionError(TypeError, ValueError):
    """An option the chosen component does not take: a ``TypeError`` to Python callers (an
    unexpected keyword), a ``ValueError`` to the command line (bad input, exit status 2)."""


def _keywords(factory: Callable) -> dict[str, inspect.Parameter]:
    """The parameters of ``factory`` that can be passed by keyword (``**kwargs`` excluded)."""
    return {
        name: p
        for name, p in inspect.signature(factory).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def takes(factory: Callable, option: str) -> bool:
    """Whether ``factory`` has a keyword parameter named ``option``."""
    return option in _keywords(factory)


class Registry(Generic[T]):
    """Maps names to factories (usually classes) of one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(
        self, name: str, *, override: bool = False
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Class decorator: ``@REGISTRY.register("name")``. A name already taken is refused
        unless ``override=True``, which replaces its entry on purpose."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and not override:
                raise ValueError(
                    f"{self.kind} {name!r} is registered already (a built-in or another "
                    "plug-in): choose another name, or register(..., override=True) to replace it"
                )
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

    def create(
        self, name: str, *args: Any, offer: Mapping[str, Any] | None = None, **options: Any
    ) -> T:
        """Build ``name`` with ``args`` and ``options``, every one of which it must take.

        ``offer`` holds facts a builder knows (the data's size, the encoder's width) that some
        families use and others do not: each is passed only where the factory takes it.
        """
        factory = self.get(name)
        routes_its_own = any(
            p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values()
        )  # a builder that hands its options on to parts refuses the ones no part takes
        unknown = [] if routes_its_own else sorted(set(options) - set(_keywords(factory)))
        if unknown:
            elsewhere = {k: [n for n in self if k in self.options(n)] for k in unknown}
            raise OptionError(
                f"{self.kind} {name!r} takes no option {', '.join(map(repr, unknown))} (its "
                f"options: {', '.join(self.options(name)) or 'none'})"
                + "".join(
                    f"; {k!r} is an option of {', '.join(names)}"
                    for k, names in elsewhere.items()
                    if names
                )
            )
        offered = {k: v for k, v in (offer or {}).items() if takes(factory, k)}
        return factory(*args, **offered, **options)

    def options(self, name: str) -> list[str]:
        """The options of the named factory: its keyword-only parameters."""
        return [k for k, p in _keywords(self.get(name)).items() if p.kind is p.KEYWORD_ONLY]

    def defaults(self, name: str) -> dict[str, Any]:
        """The named factory's options that have a default, with it (None where it has none)."""
        return {
            k: None if p.default is p.empty else p.default
            for k, p in _keywords(self.get(name)).items()
            if p.kind is p.KEYWORD_ONLY
        }

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
