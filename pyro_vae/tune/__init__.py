"""Searching training options with Optuna (``pyro-vae tune``): the search space, the trials
as ordinary runs, several workers on one study, the summary. Optuna is imported only when a
search starts or a summary is drawn (``pip install 'pyro-vae[tune]'``); the names below are
imported from their modules on first use, as the package's are (PEP 562)."""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    **dict.fromkeys(("Searched", "read_space", "check_space", "config_of"), ".space"),
    **dict.fromkeys(("Objective", "PruneCheck"), ".objective"),
    **dict.fromkeys(("OBJECTIVES", "PRUNERS", "SAMPLERS"), ".storage"),
    **dict.fromkeys(("OptunaMissing", "optuna_module"), ".optuna_import"),
    **dict.fromkeys(("trial_rows", "write_summary"), ".summary"),
    **dict.fromkeys(("TuneSettings", "run_worker", "summary_only"), ".worker"),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


__all__ = sorted(_HOMES)
