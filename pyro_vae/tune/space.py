"""The search space of ``pyro-vae tune``: the ``[search]`` table of its config file.

Each key is a training option (:mod:`pyro_vae.training.options`), each value a table:

- a range, ``{low = 1e-4, high = 1e-2, log = true}`` or ``{low = 2, high = 32, step = 2}``:
  whole numbers when its bounds are (Optuna's ``suggest_int``), else real ones
  (``suggest_float``); ``log`` samples evenly in log space (it needs ``low > 0`` and no
  ``step``);
- values to choose from, ``{choices = ["bernoulli", "continuous-bernoulli"]}``; a choice may
  be a list (``hidden = {choices = [[200], [400, 200]]}``): Optuna's categorical choices are
  scalars, so a list is offered under its label (``"[400, 200]"``) and mapped back.

Everything is checked before a trial runs: a mistake is one line naming the key
(``search.lr: low (0.01) must be less than high (0.001)``).
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..training import ConfigError, TrainConfig, options

RANGE_KEYS = ("low", "high", "step", "log")
# options a trial sets itself, with the reason given when one is searched
NOT_SEARCHED = {
    "out": "each trial has its own run directory under pyro-vae tune --out",
    "progress": "trials train quietly",
    "seed": "the runs' seeds are the base seed and the next ones (--replicates)",
}

Error = Callable[[str, str], Exception]  # (key, reason) -> the exception to raise


def space_error(key: str, reason: str) -> Exception:
    """The error of a key of the ``[search]`` table when no file names it."""
    return ValueError(f"search.{key}: {reason}")


def label(value: Any) -> Any:
    """How Optuna is offered a choice: a scalar as it is, a list as its JSON text."""
    return json.dumps(list(value)) if isinstance(value, list | tuple) else value


@dataclass(frozen=True)
class Searched:
    """One searched option: a range (``low``, ``high``, ``step``, ``log``) or ``choices``."""

    name: str
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def integer(self) -> bool:
        """Whole numbers: a range whose bounds (and step) are ints."""
        bounds = (self.low, self.high, self.step if self.step is not None else 1)
        return not self.choices and all(type(b) is int for b in bounds)

    def suggest(self, trial: Any) -> Any:
        """This option's value for an Optuna ``trial`` (``suggest_categorical``,
        ``suggest_int`` or ``suggest_float``)."""
        if self.choices:
            labels = [label(c) for c in self.choices]
            return self.value_of(trial.suggest_categorical(self.name, labels))
        if self.integer:
            return trial.suggest_int(
                self.name, self.low, self.high, step=self.step or 1, log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def value_of(self, shown: Any) -> Any:
        """The option's value from what Optuna records of it (a choice's label)."""
        if not self.choices:
            return shown
        return next(c for c in self.choices if label(c) == shown)

    def candidates(self) -> list[Any]:
        """The values checked before any trial runs: every choice, or the range's bounds."""
        return list(self.choices) if self.choices else [self.low, self.high]

    def record(self) -> dict[str, Any]:
        """The searched option as the study records it (JSON)."""
        if self.choices:
            return {"choices": [list(c) if isinstance(c, tuple) else c for c in self.choices]}
        kept = {"low": self.low, "high": self.high, "step": self.step, "log": self.log or None}
        return {k: v for k, v in kept.items() if v is not None}


def read_space(
    table: Mapping[str, Any],
    check: Callable[[str, Any], Any] | None = None,
    error: Error = space_error,
) -> list[Searched]:
    """The searched options of a ``[search]`` table, in its order. ``check(name, value)``
    returns a bound or choice as the option's flag reads it (or raises); ``error(key, reason)``
    makes the exception of a mistake (the config file's, naming the file)."""
    declared = options()
    space = []
    for key, spec in table.items():
        name = str(key).replace("-", "_")
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise error(name, f"not an option of pyro-vae train{hint}")
        if name in NOT_SEARCHED:
            raise error(name, f"is not searched: {NOT_SEARCHED[name]}")
        space.append(_searched(name, spec, check or (lambda n, v: v), error))
    return space


def _searched(name: str, spec: Any, check: Callable[[str, Any], Any], error: Error) -> Searched:
    what = "a table: {low = ..., high = ...} or {choices = [...]}"
    if not isinstance(spec, Mapping):
        raise error(name, f"is {what}, not {spec!r}")
    unknown = [k for k in spec if k not in (*RANGE_KEYS, "choices")]
    if unknown:
        raise error(name, f"unknown key {unknown[0]!r}: a range takes low, high, step and log; "
                          "values to choose from are choices")  # fmt: skip
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise error(name, "choices or a range (low, high), not both")
        return _choices(name, spec["choices"], check, error)
    return _range(name, spec, check, error)


def _choices(name: str, given: Any, check: Callable[[str, Any], Any], error: Error) -> Searched:
    if not isinstance(given, list) or not given:
        raise error(name, f"choices is a list of at least one value, not {given!r}")
    values = [check(name, v) for v in given]
    values = [tuple(v) if isinstance(v, list) else v for v in values]
    labels = [label(v) for v in values]
    twice = sorted({str(x) for x in labels if labels.count(x) > 1})
    if twice:
        raise error(name, f"choices has {twice[0]} twice")
    return Searched(name, choices=tuple(values))


def _range(name: str, spec: Mapping[str, Any], check: Callable[[str, Any], Any], error: Error):
    missing = [k for k in ("low", "high") if k not in spec]
    if missing:
        raise error(name, f"a range needs low and high (missing: {', '.join(missing)})")
    low, high = check(name, spec["low"]), check(name, spec["high"])
    for value in (low, high):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise error(name, f"a range is of numbers, not {value!r}: give choices instead")
        if not math.isfinite(value):
            raise error(name, f"a range has finite bounds, not {value!r}")
    if not low < high:
        raise error(name, f"low ({low}) must be less than high ({high})")
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise error(name, f"log is true or false, not {log!r}")
    if log and low <= 0:
        raise error(name, f"log needs low > 0, got {low}")
    if step is not None:
        whole = type(low) is int and type(high) is int
        if isinstance(step, bool) or not isinstance(step, int if whole else int | float):
            kind = "a whole number" if whole else "a number"
            raise error(name, f"step is {kind}, not {step!r}")
        if not step > 0:
            raise error(name, f"step must be > 0, got {step}")
        if log:
            raise error(name, "log and step do not go together (Optuna samples one or the other)")
        if whole and (high - low) % step:
            raise error(name, f"high - low ({high - low}) is not a multiple of step ({step})")
        if not whole:
            step = float(step)
    return Searched(name, low=low, high=high, step=step, log=log)


def config_of(given: Mapping[str, Any]) -> TrainConfig:
    """The config of ``given`` options, as ``pyro-vae train`` makes it: an option given where
    it does not apply is refused (:class:`~pyro_vae.training.ConfigError`), even at its
    default value."""
    config = TrainConfig.of(**given)
    for name in given:
        if name in options() and getattr(config, name) is None:
            raise ConfigError(config.why_not(name))
    return config


def check_space(space: list[Searched], base: Mapping[str, Any], error: Error = space_error):
    """Each choice and each bound of ``space`` makes a valid config with the ``base`` options
    and the first value of every other searched option (a name out of its registry, a value
    out of its range, an option that does not apply are one line naming the key)."""
    firsts = {s.name: s.candidates()[0] for s in space}
    for name in base:
        if name in firsts:
            raise error(name, "is searched and given as a base option: give it in one place")
    for searched in space:
        for value in searched.candidates():
            try:
                config_of({**base, **firsts, searched.name: value})
            except (ConfigError, TypeError, ValueError) as err:
                raise error(
                    searched.name, f"{label(value)}: {' '.join(str(err).split())}"
                ) from None
