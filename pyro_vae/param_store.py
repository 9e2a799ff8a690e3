"""Whether Pyro programs put their modules in Pyro's global parameter store.

``pyro.module(name, module)`` registers a module's parameters with Pyro's param store, which
``pyro.infer.SVI`` and ``pyro.optim`` need. Code that owns the parameters itself turns it off
for a block: the trainer (its optimizer holds the parameters, and the lookup costs a dictionary
access per parameter per step), a step traced for compilation (proxy tensors must not reach the
store) and estimators that re-run a guide with its parameters held constant (constants are not
parameters). The switch is scoped, so it is always restored, and per thread.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import pyro
from torch import nn

_REGISTERING = contextvars.ContextVar("pyro_vae_param_store", default=True)


def register(name: str, module: nn.Module) -> None:
    """``pyro.module(name, module)``, unless registration is off in this block."""
    if _REGISTERING.get():
        pyro.module(name, module)


@contextlib.contextmanager
def off() -> Iterator[None]:
    """Within this block :func:`register` leaves Pyro's param store alone."""
    token = _REGISTERING.set(False)
    try:
        yield
    finally:
        _REGISTERING.reset(token)
