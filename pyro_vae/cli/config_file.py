"""``--config FILE``: a command's options read from a file, flags overriding it.

The file is TOML (``.toml``), YAML (``.yaml``/``.yml``, with PyYAML) or JSON (``.json``: a
run's own ``config.json`` among them). Its keys are the command's options by name
(``batch_size`` or ``batch-size``), at the top level or under the table of their group
(``[model]``, ``[run]``, ...: what ``pyro-vae train --print-config`` writes). A value is
checked as the flag's would be, by the same declaration: an unknown key, a value of the wrong
type or out of its choices is one line naming the file and the key; an option that does not
apply is refused by the run's config with the file named.

The values become the parser's defaults, so a flag given on the command line wins; the
options given nowhere keep their defaults.
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same reader, from PyPI
    import tomli as tomllib

CONFIG_FLAG = "--config"
GROUPS = ("data", "model", "estimator", "schedule", "run")  # train's option groups
# what a command line says, not an option a file sets (the file itself, actions of the moment)
NOT_IN_FILES = {"help", "config", "print_config", "resume", "overwrite", "debug", "version"}
# what a run's config.json records beside its options, and how a new run reads it
RUN_RECORD_KEYS = ("data_source", "out")  # dropped: a run's own directory is never the next's


class ConfigFileError(ValueError):
    """A config file that cannot be read or names what its command does not take."""


@dataclass
class ConfigFile:
    """The options a file gives (flat, by option name) and its other named tables
    (``[search]`` of ``pyro-vae tune``)."""

    path: Path
    values: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)  # the group table a key was under

    def error(self, key: str | None, reason: str) -> ConfigFileError:
        where = f"{self.path}: {key}" if key else str(self.path)
        return ConfigFileError(f"{where}: {reason}")


def _parse(path: Path) -> Any:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigFileError(f"{path}: cannot read the config file ({err})") from None
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigFileError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); "
                                      "or write the file as TOML") from None  # fmt: skip
            return yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as err:
        kind = {".toml": "TOML", ".json": "JSON"}.get(suffix, "YAML")
        raise ConfigFileError(f"{path}: not valid {kind}: {' '.join(str(err).split())}") from None
    raise ConfigFileError(f"{path}: a config file is .toml, .yaml, .yml or .json")


def read_config_file(path: str | Path, sections: Sequence[str] = ()) -> ConfigFile:
    """The options in ``path``, flattened: group tables opened, ``-`` read as ``_``; the tables
    named in ``sections`` kept apart. A run's ``config.json`` gives its options (its own part
    options among them; its directory and data record are the old run's, and left out)."""
    path = Path(path)
    data = _parse(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: a config file is a table of options, not a "
                              f"{type(data).__name__}")  # fmt: skip
    file = ConfigFile(path)
    if "data_source" in data or "part_options" in data:  # a run's config.json
        data = {k: v for k, v in data.items() if k not in RUN_RECORD_KEYS and v is not None}
        data |= data.pop("part_options", None) or {}
        named = [_plugin_spec(r) for r in data.pop("plugins", None) or []]
        if named := [spec for spec in named if spec]:
            data["plugin"] = named
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in sections:
            if not isinstance(value, dict):
                raise file.error(name, f"[{name}] is a table")
            file.sections[name] = value
        elif name in GROUPS and isinstance(value, dict):
            for inner, inner_value in value.items():
                _put(file, str(inner).replace("-", "_"), inner_value, group=name)
        else:
            _put(file, name, value)
    return file


def _plugin_spec(record: Any) -> str | None:
    """How ``--plugin`` names a plug-in a run recorded (None: an installed entry point, which
    loads itself)."""
    if not isinstance(record, dict) or record.get("kind") == "entry-point":
        return None
    return record.get("path") if record.get("kind") == "file" else record.get("module")


def _put(file: ConfigFile, name: str, value: Any, group: str | None = None) -> None:
    if name in file.values:
        raise file.error(name, "given twice")
    if group is not None:
        file.tables[name] = group
    file.values[name] = value


def config_path(argv: Sequence[str]) -> str | None:
    """The ``--config`` value in ``argv`` (None: not given), before the parser exists: the
    file may name plug-ins whose options become flags."""
    for i, arg in enumerate(argv):
        if arg == CONFIG_FLAG and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(CONFIG_FLAG + "="):
            return arg.split("=", 1)[1]
    return None


def add_config(p: argparse.ArgumentParser) -> None:
    """``--config FILE`` on a command (see the module doc)."""
    p.add_argument(
        CONFIG_FLAG,
        metavar="FILE",
        help="read options from a TOML, YAML or JSON file (a run's config.json too); "
        "flags given here override it",
    )


def command_parser(root: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The (sub)parser that reads the options of the command ``argv`` names (``study NAME``'s
    own for a study)."""
    parser, rest = root, [a for a in argv if not a.startswith("-")]
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or not rest or rest[0] not in subs[0].choices:
            return parser
        parser, rest = subs[0].choices[rest[0]], rest[1:]


def apply_config_file(
    parser: argparse.ArgumentParser, file: ConfigFile, groups: dict[str, str] | None = None
) -> set[str]:
    """Check each of ``file``'s options against ``parser``'s flag for it and make the value
    that flag's default; returns the names set. ``groups``: the table each option belongs
    under (train's option groups), where the file puts it under one."""
    actions = {
        a.dest: a
        for a in parser._actions
        if a.option_strings and a.dest not in NOT_IN_FILES and a.dest != argparse.SUPPRESS
    }
    names = {dest.split(":", 1)[-1]: dest for dest in actions}  # (part options: "part:df")
    put_under, groups = file.tables, groups or {}
    defaults = {}
    for key, value in file.values.items():
        if key not in names:
            raise file.error(key, _unknown(key, names, parser))
        action = actions[names[key]]
        want = groups.get(key, "model" if action.dest.startswith("part:") else None)
        if key in put_under and want and put_under[key] != want:
            raise file.error(key, f"belongs under [{want}], not [{put_under[key]}]")
        defaults[action.dest] = _value(file, key, value, action)
    parser.set_defaults(**defaults)
    return set(defaults)


def _unknown(key: str, names: dict[str, str], parser: argparse.ArgumentParser) -> str:
    if key in NOT_IN_FILES:
        return f"give {'--' + key.replace('_', '-')} on the command line, not in a file"
    close = difflib.get_close_matches(key, list(names), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown option for {parser.prog}{hint}"


def _value(file: ConfigFile, key: str, value: Any, action: argparse.Action) -> Any:
    """``value`` as ``action``'s flag would make it, or one line saying why not."""
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool):
            raise file.error(key, f"is true or false, not {value!r}")
        return value
    many = action.nargs == "+" or isinstance(action, argparse._AppendAction)
    if many:
        values = value if isinstance(value, list) else [value]
        if not values:
            raise file.error(key, "needs at least one value")
        return [_one(file, key, v, action) for v in values]
    if isinstance(value, list | dict):
        raise file.error(key, f"is one value, not a {type(value).__name__}")
    return _one(file, key, value, action)


def _one(file: ConfigFile, key: str, value: Any, action: argparse.Action) -> Any:
    kind = action.type
    if isinstance(value, bool) and kind is not None and kind is not bool:
        raise file.error(key, f"is {_kind_name(kind)}, not {value!r}")
    if kind is int and not isinstance(value, int):
        raise file.error(key, f"is an integer, not {value!r}")
    if kind is float:
        if not isinstance(value, int | float):
            raise file.error(key, f"is a number, not {value!r}")
        value = float(value)
    elif kind is None or kind is str:
        if not isinstance(value, str):
            raise file.error(key, f"is a string, not {value!r}")
    elif kind is not int:
        try:  # a flag's own parser (a size, true/false): it reads the text of the value
            value = kind(value if isinstance(value, str) else str(value))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
            raise file.error(key, str(err)) from None
    if action.choices is not None and value not in action.choices:
        raise file.error(key, f"{value!r} is not one of: {', '.join(map(str, action.choices))}")
    return value


def _kind_name(kind: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string"}.get(kind, "a value")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def config_as_toml(values: dict[str, Any], groups: dict[str, str], notes: dict[str, str]) -> str:
    """``values`` (the options that apply to a run) as a TOML file a user edits and passes to
    ``--config``: one table per group (``groups``: each option's; the options of the user's
    parts under ``model``), each option under a comment (``notes``: its help).
    Written here: tomllib reads TOML and nothing in the standard library writes it; these
    values are strings, numbers, booleans and lists of them."""
    lines = ["# pyro-vae train options: edit, then run: pyro-vae train --config FILE",
             "# (a flag given beside --config overrides the file)"]  # fmt: skip
    for group in GROUPS:
        mine = {k: v for k, v in values.items() if groups.get(k) == group and v is not None}
        if mine:
            lines += ["", f"[{group}]"]
        for name, value in mine.items():
            if note := notes.get(name):
                lines.append(f"# {' '.join(note.split())}")
            lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
