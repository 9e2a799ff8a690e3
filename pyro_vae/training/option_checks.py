"""How a :class:`~pyro_vae.training.options.TrainConfig` checks itself as it is made: options
given as ``auto`` choose their value, each option is coerced, dropped where it does not apply
and checked where it does, the options of the user's own parts are checked to be taken by a
chosen part, and the model and estimator are built once on the side, so that every check a
part makes fails before any data is read. Where an option applies is the options module's
doc; this is the machinery."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..data import DATASETS
from ..inference import ESTIMATORS
from ..model import MODELS, build_model
from ..model.build import takes_option
from ..model.option_routing import PART_REGISTRIES, takers
from ..registry import Registry
from .rules import NOMINAL_SHAPE, is_factory, nominal_context_dim
from .schema import ConfigError, Option, check_type, coerce, flag_of

GIVEN_MODEL = "given"  # the model: a VAE passed from Python (pyro_vae.train(vae=...))
GIVEN_DATA = "given"  # the dataset: data passed from Python (pyro_vae.train(data=...))
GIVEN_DATA_OPTIONS = ("layout",)  # the data options that apply to data given from Python


class CheckedOptions:
    """The checks of a dataclass of options (fields with an :class:`Option` in their
    metadata, and plain fields besides: ``part_options``, ``plugins``)."""

    model: str
    part_options: dict[str, Any]

    def _options(self) -> dict[str, Option]:
        return {f.name: f.metadata["option"] for f in dataclasses.fields(self) if f.metadata}

    def _fields(self) -> set[str]:
        return {f.name for f in dataclasses.fields(self)}

    def _default(self, name: str) -> Any:
        return type(self).__dataclass_fields__[name].default

    def _choose_automatic(self) -> None:
        """Options given as ``auto`` take the value their rule chooses from the others."""
        for name, opt in self._options().items():
            if opt.automatic is not None and getattr(self, name) == "auto":
                setattr(self, name, opt.automatic.resolve(self))

    def _settle(self, name: str, opt: Option) -> None:
        """Coerce the value, drop it where it does not apply, check it where it does."""
        default = self._default(name)
        value = coerce(getattr(self, name), default)
        if not self.applies(name):
            if value is not None and value != default:
                raise ConfigError(self.why_not(name))
            value = None
        elif value is None:
            value = default  # (particles: None, the estimator's own default)
        setattr(self, name, value)
        if value is None:
            return
        check_type(name, value, opt.type or (str if default is None else type(default)))
        names = opt.choice_names()
        if (name, value) in (("model", GIVEN_MODEL), ("dataset", GIVEN_DATA)):
            names = []  # (set by pyro_vae.train(vae=..., data=...), not chosen by name)
        if names and value not in names:
            kind = opt.choices.kind if isinstance(opt.choices, Registry) else name
            raise ConfigError(f"unknown {kind} {value!r}; choose one of: {', '.join(names)}")
        if opt.check is not None and not opt.check.holds(value):
            shown = repr(value) if isinstance(value, str) else value
            raise ConfigError(f"{flag_of(name)} must be {opt.check.rule}, got {shown}")

    def _check_part_options(self) -> None:
        """Each option of the user's own parts is not a declared option, and is taken by a
        part this run chose."""
        if not isinstance(self.part_options, dict):
            raise ConfigError("part_options is an object of option names and values")
        for name in self.part_options:
            if name in self._fields():
                raise ConfigError(f"{name!r} is a declared option: give it as {flag_of(name)}")
            if self.model == GIVEN_MODEL:
                raise ConfigError(
                    f"{flag_of(name)} is an option of a named part; the model given from "
                    "Python takes its options where it is built"
                )
            if not self._chosen_parts_take(name):
                where = "; ".join(
                    f"{kind} {', '.join(names)}" for kind, names in takers(name).items() if names
                )
                raise ConfigError(
                    f"{flag_of(name)} does not apply to --model {self.model}"
                    + (f": it is an option of {where}" if where else ": no part takes it")
                )

    def _chosen_parts_take(self, param: str) -> bool:
        chosen = {p: getattr(self, p) for p in PART_REGISTRIES}
        return takes_option(param, self.model, **{p: v for p, v in chosen.items() if v})

    def applies(self, name: str) -> bool:
        """Whether option ``name`` means something for this run (see the module doc)."""
        opt = self._options()[name]
        if opt.applies is not None:
            return bool(opt.applies(self))
        if opt.group == "model" and name not in ("model", "beta"):
            if self.model == GIVEN_MODEL:  # built by the user: beta reaches it by a handler
                return False
            if is_factory(self.model) and not opt.part:  # a factory's own: if it takes them
                return (opt.param or name) in MODELS.options(self.model)
        if not opt.part:
            return True
        param = opt.param or name
        if opt.group == "data":
            if self.dataset == GIVEN_DATA:
                return param in GIVEN_DATA_OPTIONS
            return param in DATASETS.options(self.dataset)
        if opt.group == "estimator":
            return param in ESTIMATORS.options(self.estimator)
        return self._chosen_parts_take(param)

    def why_not(self, name: str) -> str:
        """The message for option ``name`` set where it does not apply."""
        opt = self._options()[name]
        flag = flag_of(name)
        if opt.applies is not None:
            return f"{flag} applies only with {opt.when}"
        if opt.group == "model" and self.model == GIVEN_MODEL:
            return f"{flag} does not apply to the VAE given from Python: build it with the option"
        param = opt.param or name
        if opt.group in ("data", "estimator"):
            registry = DATASETS if opt.group == "data" else ESTIMATORS
            owners = {registry.kind: [e for e in registry if param in registry.options(e)]}
            here = f"--{registry.kind} {getattr(self, registry.kind)}"
        else:
            owners = {"model": [m for m in MODELS if param in MODELS.options(m)]} | takers(param)
            parts = [p for p in PART_REGISTRIES if p in MODELS.options(self.model)]
            chosen = ", ".join(f"{p} {getattr(self, p)}" for p in parts)
            here = f"--model {self.model}" + (f" ({chosen})" if chosen else "")
        where = "; ".join(f"{kind} {', '.join(names)}" for kind, names in owners.items() if names)
        return f"{flag} does not apply to {here}: it is an option of {where}"

    def _try_building(self) -> None:
        """Build the model and the estimator once, on the side: every check a part makes of
        its options fails here, before any data is read (the random streams are untouched)."""
        context_dim = nominal_context_dim(self, NOMINAL_SHAPE)
        try:
            if self.model != GIVEN_MODEL:
                with torch.random.fork_rng(devices=[]):
                    build_model(NOMINAL_SHAPE, context_dim=context_dim, **self.model_options())
            ESTIMATORS.create(self.estimator, **self.estimator_options())
        except (ValueError, TypeError) as err:
            raise ConfigError(str(err)) from None

    def differences(self, other: Any) -> list[str]:
        """Options (other than the resumable ones) whose values differ, as 'name: a != b'."""
        mine, theirs = self.as_dict(), other.as_dict()
        return [
            f"{k}: {mine[k]!r} != {theirs[k]!r}"
            for k, opt in self._options().items()
            if not opt.resumable and mine[k] != theirs[k]
        ] + [
            f"{k}: {mine['part_options'].get(k)!r} != {theirs['part_options'].get(k)!r}"
            for k in sorted(set(mine["part_options"]) | set(theirs["part_options"]))
            if mine["part_options"].get(k) != theirs["part_options"].get(k)
        ]
