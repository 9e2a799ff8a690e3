"""The help text of a training option as ``pyro-vae train --help`` gives it, for every command
and study whose flag sets that option, so that the words and the choices are written once (in
:mod:`pyro_vae.training.options`)."""

from __future__ import annotations

from .options import options


def option_help(name: str, words: str = "") -> str:
    """The help of training option ``name`` (:mod:`pyro_vae.training.options`), or ``words``,
    with the names it takes, as ``pyro-vae train --help`` gives them, for a study's flag that
    its runs take as that option."""
    opt = options()[name]
    names = f"; one of {', '.join(opt.choice_names())}" if opt.choices is not None else ""
    auto = f"; auto: {opt.automatic.rule}" if opt.automatic is not None else ""
    return (words or opt.help) + names + auto
