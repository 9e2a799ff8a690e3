"""``pyro-vae tune --config SPACE.toml``: search training options with Optuna
(:mod:`pyro_vae.tune`), its flags, and the checks of its file.

SPACE.toml holds the base options, at the top level or under their group tables, checked
exactly as ``pyro-vae train --config`` checks them, and the ``[search]`` table
(:mod:`pyro_vae.tune.space`), each bound and choice read as its train flag reads it; every
mistake is one line naming the file and the key, before any trial runs. (The training layer
and Optuna are imported by the functions that use them.)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .config_file import CONFIG_FLAG, ConfigFile, ConfigFileError, apply_config_file
from .help import CommandParser
from .plugin_flags import add_plugin
from .train_flags import add_train, option_groups, train_config


def add_tune(sub: argparse._SubParsersAction) -> None:
    from ..studies.harness import measure_arguments

    what = "search training options with Optuna, several workers at once"
    p = sub.add_parser(
        "tune",
        help=what,
        description=what[0].upper() + what[1:] + ".",
        epilog="docs/tune.md: the file, several workers, the storage.",
    )
    p.add_argument(
        CONFIG_FLAG,
        metavar="FILE",
        required=True,
        help="TOML, YAML or JSON: the base options of every trial (as train --config reads "
        "them) and the [search] table of the options searched",
    )
    _study_flags(p)
    _search_flags(p)
    measure_arguments(p)
    p.add_argument(
        "--summary-only",
        action="store_true",
        help="run no trial: write OUT/tune.md, tune.csv and tune.png again from the storage, "
        "and print the table",
    )
    add_plugin(p)
    p.set_defaults(reads_config_file=True)  # the file is read here, not as the flags' defaults


def _study_flags(p: argparse.ArgumentParser) -> None:
    """How many trials, and where the study and its runs live."""
    from ..studies.harness import at_least

    p.add_argument(
        "--trials",
        type=at_least(1),
        default=20,
        metavar="N",
        help="trials of the study in all, over every worker",
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help="the study's storage, an SQLAlchemy URL (sqlite:///FILE, postgresql://...); "
        "left out: sqlite:///OUT/study.db",
    )
    p.add_argument(
        "--study-name",
        default="pyro-vae",
        metavar="NAME",
        help="the study's name in its storage: workers given the same storage and name share "
        "its trials",
    )
    p.add_argument(
        "--out",
        default="runs/tune",
        metavar="DIR",
        help="where the trials' run directories and the summary go",
    )


def _search_flags(p: argparse.ArgumentParser) -> None:
    """What a trial scores, and how settings are drawn and trials pruned."""
    from ..studies.harness import at_least
    from ..tune.storage import OBJECTIVES, PRUNERS, SAMPLERS

    p.add_argument(
        "--objective",
        default="test_neg_elbo",
        choices=list(OBJECTIVES),
        metavar="NAME",
        help="what a trial scores: the final test -ELBO (minimized) or test log p(x) by "
        "importance sampling (maximized)",
    )
    p.add_argument(
        "--replicates",
        type=at_least(1),
        default=1,
        metavar="K",
        help="runs of each setting, seeded seed, seed + 1, ...: the trial's value is their mean",
    )
    p.add_argument(
        "--sampler",
        default="tpe",
        choices=SAMPLERS,
        metavar="NAME",
        help="how settings are drawn: Optuna's TPE or random sampler",
    )
    p.add_argument(
        "--pruner",
        default="median",
        choices=PRUNERS,
        metavar="NAME",
        help="stop a trial whose test -ELBO after an epoch is worse than the median of the "
        "others' at that epoch (Optuna's MedianPruner), or never",
    )
    p.add_argument(
        "--seed",
        type=at_least(0),
        default=0,
        metavar="S",
        help="the sampler's seed: trial k draws from a generator seeded by S and k",
    )


def _train_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """A command line with ``train`` alone, and ``train``'s parser."""
    root = CommandParser(prog="pyro-vae")
    sub = root.add_subparsers(dest="command")
    add_train(sub)
    return root, sub.choices["train"]


def base_options(file: ConfigFile) -> tuple[dict[str, Any], list[str]]:
    """The options ``file`` gives every trial, checked as ``pyro-vae train --config FILE``
    checks them, and the plug-ins it names."""
    if "out" in file.values:
        raise file.error("out", "each trial has its own run directory under pyro-vae tune --out")
    root, train = _train_parser()
    set_by_file = apply_config_file(train, file, option_groups())
    args = root.parse_args(["train"])
    args.config_file = file
    args.from_file = {dest.split(":", 1)[-1] for dest in set_by_file}
    train_config(args)  # refuses what train refuses: an option that does not apply, ...
    given = {d.split(":", 1)[-1]: getattr(args, d) for d in set_by_file if d != "plugin"}
    return given, list(args.plugin or [])


def _flag_check(file: ConfigFile) -> Any:
    """``check(name, value)``: a bound or choice of ``[search]`` as train's flag reads it."""
    _, train = _train_parser()

    def check(name: str, value: Any) -> Any:
        try:
            (dest,) = apply_config_file(train, ConfigFile(file.path, values={name: value}))
        except ConfigFileError as err:
            reason = str(err).removeprefix(f"{file.path}: {name}: ")
            raise file.error(f"search.{name}", reason) from None
        return train.get_default(dest)

    return check


def tune(args: argparse.Namespace) -> int:
    from ..tune import (
        TuneSettings,
        check_space,
        optuna_module,
        read_space,
        run_worker,
        summary_only,
    )

    optuna_module()  # one line if it is missing, before anything is read or written
    file: ConfigFile = args.config_file

    def error(key: str, reason: str) -> Exception:
        return file.error(f"search.{key}", reason)

    base, plugins = base_options(file)
    space = read_space(file.sections.get("search", {}), _flag_check(file), error)
    if not space and not args.summary_only:
        raise file.error(None, "no [search] table: name the options to search (docs/tune.md)")
    check_space(space, base, error)
    settings = TuneSettings(
        base, space, trials=args.trials, out=Path(args.out), storage=args.storage,
        study_name=args.study_name, objective=args.objective, replicates=args.replicates,
        sampler=args.sampler, pruner=args.pruner, seed=args.seed,
        plugins=list(dict.fromkeys([*args.plugin, *plugins])),
        num_samples=args.num_samples, max_images=args.max_eval_images,
    )  # fmt: skip
    print(summary_only(settings) if args.summary_only else run_worker(settings), end="")
    print(f"\nfigure: {settings.out / 'tune.png'}; every trial: {settings.out / 'tune.csv'}")
    return 0
