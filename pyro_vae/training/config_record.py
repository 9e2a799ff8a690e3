"""config.json: a config of options as JSON values (:meth:`ConfigRecord.as_dict`) and a config
from them (:meth:`ConfigRecord.from_dict`), for a dataclass of options such as
:class:`~pyro_vae.training.options.TrainConfig`. What an option is and where it applies is the
options module's doc; this is the record on disk."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from ..registry import Registry
from .option_checks import CheckedOptions
from .schema import ConfigError, coerce

Config = TypeVar("Config", bound="ConfigRecord")


class ConfigRecord(CheckedOptions):
    """The config.json of a dataclass of options (lists for tuples, ``None`` where an option
    does not apply), and the config a config.json records."""

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)  # type: ignore[call-overload]
        d["part_options"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in self.part_options.items()
        }
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls: type[Config], d: dict[str, Any]) -> Config:
        """The config a config.json records. Options that do not apply are dropped whatever
        their value: earlier versions recorded every option, used or not. One that may change
        on resume and names what is not registered now is left at its default."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config is an object of options, not a {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - set(fields)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        extra = {
            "part_options": {k: coerce(v, v) for k, v in d.get("part_options", {}).items()},
            "plugins": list(d.get("plugins", [])),
            "data_source": dict(d.get("data_source", {})),
        }
        declared = [name for name, f in fields.items() if f.metadata]
        values = {name: d.get(name, fields[name].default) for name in declared}
        for name in declared:
            opt = fields[name].metadata["option"]
            if (
                opt.resumable
                and isinstance(opt.choices, Registry)
                and values[name] not in opt.choices
            ):
                # a part that plays no role in reading the run (a plug-in's tracker, not
                # loaded now): the run reads without it
                values[name] = fields[name].default
        record = object.__new__(cls)
        record.__dict__.update(values)
        record._choose_automatic()
        values.update(record.__dict__)
        for name in declared:
            if not record.applies(name):
                values[name] = record.__dict__[name] = None
        return cls(**values, **extra)
