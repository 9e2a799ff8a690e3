"""The help of ``pyro-vae``, its commands and its studies: every option with its words, its
choices and its true default, taken from the option itself (or from the training options'
schema, :mod:`pyro_vae.training.options`), so that the help cannot drift from what the parser
does."""

from __future__ import annotations

import argparse
import atexit
import gc
import textwrap
from typing import Any, NoReturn


def shown(value: Any) -> str:
    """A default as the command line shows it: a list or tuple as its values, space-separated,
    as they are typed (``400``, ``0 1 2``)."""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def shows_default(action: argparse.Action) -> bool:
    """Whether the help of ``action`` ends with its default: an option that takes a value and
    has one. A flag's default is its absence; an option whose default is None (or empty) says
    in its own words what leaving it out does."""
    return (
        bool(action.option_strings)
        and action.nargs != 0
        and action.default is not None
        and action.default is not argparse.SUPPRESS
        and shown(action.default) != ""
    )


class HelpFormatter(argparse.HelpFormatter):
    """Help that takes an option's choices and default from the option itself, so that the text
    cannot drift from what the parser does: ``; one of a, b`` for its choices and
    ``(default: X)`` for its default (:func:`shown`, :func:`shows_default`), as ``pyro-vae
    train --help`` shows the training options. Help texts therefore never state a default that
    the option has; an option with choices gives a ``metavar``, which keeps the usage short."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and action.choices is not None:
            text += "; one of " + ", ".join(map(str, action.choices)).replace("%", "%%")
        if shows_default(action):
            text += f" (default: {shown(action.default).replace('%', '%%')})"
        return text

    def _split_lines(self, text: str, width: int) -> list[str]:
        # names and paths are not broken at their hyphens (mean-field, runs/beta-sweep)
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _freeze_at_exit() -> None:
    """At interpreter exit, freeze what is alive (``gc.freeze``), so that the interpreter's
    last garbage collection skips it: over the objects torch makes at import, that collection
    is a quarter of a ``pyro-vae train --help`` (0.4 s of 2). Their memory goes back with the
    process, and the exit handlers still run. A process that goes on (a test calling the
    parser) is not affected until it exits."""
    atexit.unregister(gc.freeze)  # registered once, however many parses end
    atexit.register(gc.freeze)


class CommandParser(argparse.ArgumentParser):
    """The parser of ``pyro-vae``, its commands and its studies (a parser's subcommands are of
    its class): help by :class:`HelpFormatter`. A parse that ends the process (help, the
    version, a usage error) ends it without the last garbage collection
    (:func:`_freeze_at_exit`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        _freeze_at_exit()
        super().exit(status, message)
