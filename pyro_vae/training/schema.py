"""How an option of a training run is declared: a dataclass field whose metadata is an
:class:`Option` (help, group, choices, check, where it applies). The declarations themselves
are :mod:`pyro_vae.training.options`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..registry import Registry


class ConfigError(ValueError):
    """An option with a value the run cannot use; the message names the option."""


@dataclass(frozen=True)
class Check:
    """A condition on one value, and the same condition in words (">= 1")."""

    holds: Callable[[Any], bool]
    rule: str


def at_least(bound: float) -> Check:
    return Check(lambda v: math.isfinite(v) and v >= bound, f">= {bound:g}")


POSITIVE = Check(lambda v: math.isfinite(v) and v > 0, "> 0")
POSITIVE_SIZES = Check(lambda v: len(v) > 0 and all(h >= 1 for h in v), "positive sizes")


@dataclass(frozen=True)
class Automatic:
    """How an option given as ``auto`` chooses its value from the rest of the config (before
    anything is checked), and the choice in words, for the help."""

    resolve: Callable[[Any], str]
    rule: str


@dataclass(frozen=True)
class Option:
    """What the field of an option does not say itself (see the module doc)."""

    help: str
    group: str
    choices: Registry | Sequence[str] | None = None
    check: Check | None = None
    part: bool = False
    applies: Callable[[Any], bool] | None = None  # of the config being checked
    when: str = ""  # the ``applies`` condition in words, for messages
    resumable: bool = False  # may differ when a run is resumed (it does not change the result)
    flag: str = ""  # the command-line flag, if not --name (a store-false switch then)
    param: str = ""  # the builder's keyword, if not the option's name
    type: type | None = None  # the type of a value, where the default (None) does not say
    automatic: Automatic | None = None  # the value may be "auto", chosen so

    def choice_names(self) -> list[str]:
        names = list(self.choices) if self.choices is not None else []
        return ["auto", *names] if self.automatic is not None else names


def option(default: Any, help: str, group: str, **declared: Any) -> Any:
    """A field of :class:`TrainConfig`: its default and its :class:`Option` declaration."""
    return field(default=default, metadata={"option": Option(help, group, **declared)})


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def coerce(value: Any, default: Any) -> Any:
    """JSON and command-line values as the option's type (lists of sizes as tuples)."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def check_type(name: str, value: Any, kind: type) -> None:
    """A value of the option's type (a config.json is checked as strictly as the flags); a
    number finite."""
    if kind is tuple:
        ok = isinstance(value, tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        words = "a list of whole numbers"
    elif kind is float:
        ok = isinstance(value, float)
        words = "a number"
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        words = "a whole number"
    else:
        ok = isinstance(value, kind)
        words = {bool: "true or false", str: "a string"}.get(kind, kind.__name__)
    if not ok:
        raise ConfigError(f"{flag_of(name)} must be {words}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{flag_of(name)} must be a finite number, got {value}")
