"""``pyro-vae train``'s flags (one per declared option, each defaulting to None so the options
given are told from those left out), ``--print-config``, and the config the flags make. (The
training layer is imported by the functions that use it: ``pyro-vae --version`` imports none
of it.)"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .config_file import ConfigFile, add_config, config_as_toml
from .help import shown
from .plugin_flags import add_plugin, part_option_flags

if TYPE_CHECKING:
    from ..training import TrainConfig
    from ..training.schema import ConfigError, Option


def _add_option(p: argparse.ArgumentParser, name: str, opt: Option) -> None:
    """One training option as a flag. Its default is None, so that the options given can be
    told from those left out (a resumed run, and options that do not apply)."""
    from ..training import TrainConfig
    from ..training.option_help import option_help
    from ..training.schema import flag_of

    default = TrainConfig.__dataclass_fields__[name].default
    kw: dict[str, Any] = {"dest": name, "default": None}
    if isinstance(default, bool):
        inverted = bool(opt.flag)
        kw["action"] = "store_false" if inverted else "store_true"
        kw["help"] = f"turn off: {opt.help}" if inverted else opt.help
    else:
        # names are checked by the config, which says in one line what the choices are
        shown_default = "" if default is None else f" (default: {shown(default)})"
        kw["help"] = option_help(name) + shown_default
        if opt.type is not None or default is None:
            kw["type"] = opt.type or str
        else:
            kw["type"] = int if isinstance(default, tuple) else type(default)
        if isinstance(default, tuple):
            kw["nargs"], kw["metavar"] = "+", "N"
    p.add_argument(opt.flag or flag_of(name), **kw)


def add_train(sub: argparse._SubParsersAction) -> None:
    from ..training import options

    p = sub.add_parser("train", help="train a VAE with SVI and write a run directory")
    add_plugin(p)
    add_config(p)
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the options of this run (flags and --config resolved) as a TOML file to "
        "edit and pass to --config, and exit",
    )
    groups = {
        "data": p.add_argument_group("data"),
        "model": p.add_argument_group("model (an option applies where a chosen part takes it)"),
        "estimator": p.add_argument_group("estimator"),
        "schedule": p.add_argument_group("schedules"),
        "run": p.add_argument_group("run"),
    }
    for name, opt in options().items():
        _add_option(groups[opt.group], name, opt)
    part_option_flags(groups["model"])
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (--epochs may grow)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The config the flags describe; with ``--resume``, the run's own, with the options that
    may change on resume (``--epochs``, ``--device``, ...) taken from the flags
    (:func:`~pyro_vae.training.run.resumed_config`). An option a ``--config`` file gave that
    the config refuses is named with the file."""
    from ..training import TrainConfig, options
    from ..training.run import resumed_config
    from ..training.schema import ConfigError

    declared = options()
    given = {name: getattr(args, name) for name in declared if getattr(args, name) is not None}
    given |= {
        key.split(":", 1)[1]: value
        for key, value in vars(args).items()
        if key.startswith("part:") and value is not None
    }
    try:
        if not args.resume:
            config = TrainConfig.of(**given)
            for name in given:  # refused even at its default value: it was asked for
                if name in declared and getattr(config, name) is None:
                    raise ConfigError(config.why_not(name))
            return config
        return resumed_config(given)  # whether and how it may resume is the training layer's
    except ConfigError as err:
        raise _named_in_file(args, err) from None


def _named_in_file(args: argparse.Namespace, err: ConfigError) -> ConfigError:
    """``err`` with the file and key in front, where it is about an option the file set."""
    from ..training.schema import ConfigError, flag_of

    file: ConfigFile | None = getattr(args, "config_file", None)
    text = str(err)
    for key in getattr(args, "from_file", ()):
        if text.startswith(flag_of(key) + " ") or f" {flag_of(key)} " in f" {text}":
            return ConfigError(f"{file.path}: {key}: {text}")  # type: ignore[union-attr]
    return err


def print_config(args: argparse.Namespace) -> int:
    """``train --print-config``: the resolved options that apply, as TOML, by group."""
    from ..training import options
    from ..training.option_help import option_help

    config = train_config(args)
    declared = options()
    record = config.as_dict()
    values = {name: record[name] for name in declared} | dict(config.part_options)
    groups = option_groups() | {name: "model" for name in config.part_options}
    if args.plugin:
        values["plugin"], groups["plugin"] = list(args.plugin), "run"
    notes = {name: option_help(name) for name in declared}
    print(config_as_toml(values, groups, notes), end="")
    return 0


def option_groups() -> dict[str, str]:
    """The table a train option goes under in a config file: its group."""
    from ..training import options

    return {name: opt.group for name, opt in options().items()}
