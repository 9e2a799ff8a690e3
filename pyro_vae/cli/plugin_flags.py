"""``--plugin`` on every command, imported before the command line is read, and a flag for
each option of the user's own parts. (The training layer is imported by the functions that use
it: ``pyro-vae --version`` imports none of it.)"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .. import plugins
from .help import shown


def add_plugin(p: argparse.ArgumentParser) -> None:
    """``--plugin``, on every command: the modules it names are imported before the command
    line is read (:func:`early_plugins`), so the parts they register are names here."""
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE.py",
        help="import a module that registers parts (likelihoods, priors, guides, networks, "
        "estimators, datasets, studies); repeatable; needed again to read a run made with it. "
        f"Installed packages' entry points ({plugins.ENTRY_POINT_GROUP}) need no flag",
    )


def early_plugins(argv: Sequence[str]) -> None:
    """Import what ``argv`` names before the parser is built: the installed entry points, every
    ``--plugin``, and the ``--model MODULE:FACTORY`` of train (its options become flags) or of
    a study (``study estimators --model ...``: a bad reference is one line before parsing)."""
    from ..training.user_code import prepare_training

    named, model = [], None
    command = next((arg for arg in argv if not arg.startswith("-")), None)  # (after --debug)
    for i, arg in enumerate(argv):
        for flag in ("--plugin", "--model"):
            value = None
            if arg == flag and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            if value is not None and flag == "--plugin":
                named.append(value)
            elif value is not None and command in ("train", "study"):
                model = value
    prepare_training(named, model)


def part_option_flags(p: argparse._ArgumentGroup) -> None:
    """A flag for each option of the user's registered parts that no field declares (a
    plug-in likelihood's ``--df``), typed by its default."""
    from ..training import options
    from ..training.schema import flag_of
    from ..training.user_code import user_part_options

    declared = set(options()) | {"data_shape"}
    for name, (default, owners) in user_part_options().items():
        if name in declared:
            continue
        kw: dict[str, Any] = {"dest": f"part:{name}", "default": None, "metavar": name.upper()}
        if isinstance(default, bool):
            kw["type"] = _boolean
        elif isinstance(default, (tuple, list)):
            kw["type"], kw["nargs"] = type(default[0]) if default else int, "+"
        elif default is not None:
            kw["type"] = type(default)
        shown_default = "" if default is None else f" (default: {shown(default)})"
        p.add_argument(flag_of(name), help=f"{owners}: an option of a plug-in{shown_default}",
                       **kw)  # fmt: skip


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"true or false, not {text!r}")
