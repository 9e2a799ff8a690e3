"""A bare Pyro model/guide pair as the pipeline's model.

Pyro's own examples write a VAE as two functions (or two methods of a module) that call
``pyro.module`` and ``pyro.param`` and put their parameters in Pyro's global parameter store::

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0, 1).expand([2]).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

:class:`PyroProgram` gives such a pair what the pipeline needs of a model: the parameters
as a module's (the optimizer, checkpoints and resume hold them), beta on its latent sites
(the handler of :mod:`pyro_vae.model.latent_scale`), and nothing it does not have. The
parameters are found by tracing the pair once (:meth:`PyroProgram.capture`): every
``pyro.param`` site, whose unconstrained tensor in the store becomes a parameter of this
module, the same tensor, so that an optimizer step or a checkpoint loaded here is what the
store hands the program next. Metrics, checkpoints, resume, log p(x) by IS and AIS need only
the programs; figures that need a decoder (reconstructions, samples) are left out, saying why.
The compiled step substitutes a module's parameters and cannot reach the store: not offered.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import torch
from pyro import poutine
from torch import nn

from .vae import VAE


def _key(name: str) -> str:
    """A parameter name of the store as a module attribute name (no dots)."""
    return name.replace(".", "·")


class PyroProgram(VAE):
    """``model`` and ``guide``: callables of the data rows (functions, or methods of an
    ``nn.Module`` whose parameters they use). ``modules``: modules they use that are not
    reachable otherwise (their parameters are found by tracing anyway, through
    ``pyro.module``)."""

    def __init__(self, model: Callable, guide: Callable, *modules: nn.Module) -> None:
        nn.Module.__init__(self)  # (a VAE's networks and families: a bare pair has none)
        self._model, self._guide = model, guide
        owners = {getattr(f, "__self__", None) for f in (model, guide)}
        self.owned = nn.ModuleList([m for m in (*owners, *modules) if isinstance(m, nn.Module)])
        self.store = nn.ParameterDict()
        self._beta, self._beta_override, self._latents_weighted = 1.0, None, False

    @property
    def row_width(self) -> int | None:  # type: ignore[override]
        return None  # whatever the data's rows are: the program reads them

    def check_rows(self, x: torch.Tensor) -> None:
        if x.dim() != 2:
            raise ValueError(f"the model takes a batch of rows (N, D); got {tuple(x.shape)}")

    def model(self, x: torch.Tensor):
        return self._model(x)

    def guide(self, x: torch.Tensor):
        return self._guide(x)

    def code_guide(self, x: torch.Tensor):
        return self.guide(x)

    def runs_user_code(self) -> bool:
        return True

    def capture(self, x: torch.Tensor) -> None:
        """Trace the pair on the rows ``x`` and hold every parameter it takes from Pyro's
        store as this module's (the store keeps the same tensor)."""
        store = pyro.get_param_store()
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            for program in (self._guide, self._model):
                trace = poutine.trace(program, param_only=True).get_trace(x)
                for name in trace.param_nodes:
                    if _key(name) in self.store:
                        continue
                    tensor = store._params[name]  # unconstrained, as the optimizer sees it
                    if not isinstance(tensor, nn.Parameter):
                        tensor = nn.Parameter(tensor.detach())
                        store._params[name] = tensor
                        store._param_to_name[tensor] = name
                    self.store[_key(name)] = tensor

    def _missing(self, what: str) -> AttributeError:
        return AttributeError(f"a bare model/guide pair has no {what}: wrap it in a VAE for it")

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise self._missing("decoder to reconstruct with")

    def sample(self, n: int, like: torch.Tensor | None = None) -> torch.Tensor:
        raise self._missing("decoder to sample images with")


def as_vae(given: object) -> VAE:
    """What ``pyro_vae.train(vae=...)`` accepts, as the pipeline's model: a :class:`VAE`
    itself; a ``(model, guide)`` pair of callables; or an object with ``model`` and ``guide``
    methods (an ``nn.Module`` owning their parameters, say)."""
    if isinstance(given, VAE):
        return given
    if isinstance(given, tuple) and len(given) == 2 and all(map(callable, given)):
        return PyroProgram(*given)
    model, guide = getattr(given, "model", None), getattr(given, "guide", None)
    if callable(model) and callable(guide):
        return PyroProgram(model, guide)
    raise TypeError(
        "vae= takes a pyro_vae.VAE, a (model, guide) pair of callables, or an object with "
        f"model and guide methods; got a {type(given).__name__}"
    )
