"""Optuna, imported when a search starts: ``import pyro_vae`` and the other commands never
load it, and without it ``pyro-vae tune`` says in one line how to install it."""

from __future__ import annotations

from types import ModuleType

INSTALL = "pyro-vae tune needs Optuna: pip install 'pyro-vae[tune]'"


class OptunaMissing(ValueError):
    """Optuna is not installed (a ValueError: the command line says so in one line)."""


def optuna_module() -> ModuleType:
    """The ``optuna`` module, its log quietened to warnings (the search prints its own line
    per trial)."""
    try:
        import optuna
    except ImportError:
        raise OptunaMissing(INSTALL) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna
