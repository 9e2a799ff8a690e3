"""The first-batch check for a model we have never seen: the training step against Pyro's own
objective of the same model, at the same noise.

No hand-written loss exists for a user's model (a rewritten ``model``, a likelihood or prior
a plug-in registered, an estimator of their own), so the trainer checks what can be checked:
that the path it steps with (the sync-free, particle-vectorised twin, or the compiled graph:
:mod:`pyro_vae.inference.sync_free`, :mod:`pyro_vae.training.compiled`) computes the objective
Pyro computes from the model's own traces. Both run from the same seed, so both draw the same
z; a step that dropped a site, scaled beta on one side only or detached a term differs.

Pyro's counterpart of each estimator:

- ``Trace_ELBO`` / ``TraceMeanField_ELBO``: the class itself (K particles drawn one after the
  other, ``max_plate_nesting`` as the estimator's);
- the importance-weighted bound (``IWAE``, one group): from Pyro's traces with K particles in
  an outer plate, log w_k = sum of the model's scaled site log-densities - those of the guide's
  latent sites, per image, and -sum_n log (1/K) sum_k w_k (Burda et al., 2016);
- the Renyi bound: 1/(1 - alpha) log (1/K) sum_k w_k^(1 - alpha) from the same weights
  (Li & Turner, 2016);
- any other estimator (ours or the user's): its own eager loss is what the step must equal;
  the check then says that it compared the step with the eager estimator, not with Pyro.

What ran is returned, so the run's summary and banner name it; nothing passes silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample

from ..inference.bounds import RenyiBound
from ..inference.iwae import IWAE
from .reference_check import ReferenceMismatch

Loss = Callable[[Callable, Callable, torch.Tensor], torch.Tensor]


def _log_weights(model: Callable, guide: Callable, x: torch.Tensor, k: int, nesting: int):
    """log w, shape (K, N): K particles of each image, from Pyro's traces."""
    with pyro.plate("particles", k, dim=-(nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    log_w = torch.zeros(k, x.shape[0], dtype=x.dtype, device=x.device)
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if sign < 0 and site["is_observed"]:
                continue
            lp = site["fn"].log_prob(site["value"])
            if site["mask"] is not None:
                lp = lp * site["mask"]
            lp = lp * site["scale"]
            log_w = log_w + sign * _per_image(name, lp, k, x.shape[0])
    return log_w


def _per_image(name: str, log_prob: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """A site's log-density as (K, N), summed over any plate inside ``plate("data")``."""
    while log_prob.dim() > 2:
        log_prob = log_prob.sum(-1)
    if log_prob.dim() < 2 or log_prob.shape[-1] != n:
        raise ValueError(
            f"site {name!r} is not inside plate('data'): no per-image bound can be checked"
        )
    return log_prob.expand(k, n)


def _importance_weighted(alpha: float, k: int, nesting: int) -> Loss:
    def loss(model: Callable, guide: Callable, x: torch.Tensor) -> torch.Tensor:
        log_w = _log_weights(model, guide, x, k, nesting)
        bound = (torch.logsumexp((1 - alpha) * log_w, 0) - math.log(k)) / (1 - alpha)
        return -bound.sum()

    return loss


def pyro_counterpart(elbo: ELBO) -> tuple[str, Loss] | None:
    """Pyro's own computation of ``elbo``'s loss, and its name; None where there is none."""
    k = int(getattr(elbo, "num_particles", 1))
    nesting = elbo.max_plate_nesting if math.isfinite(elbo.max_plate_nesting) else 1
    if getattr(elbo, "vectorize_particles", False) and k > 1:
        nesting -= 1  # Pyro's ELBO counts its own particle plate in max_plate_nesting
    for cls, name in ((TraceMeanField_ELBO, "TraceMeanField_ELBO"), (Trace_ELBO, "Trace_ELBO")):
        if type(elbo) is cls:
            pyros = cls(num_particles=k, max_plate_nesting=nesting)
            return f"Pyro's {name}", pyros.differentiable_loss
    groups = int(getattr(elbo, "groups", 1))
    if type(elbo) is IWAE and groups == 1:
        return "the IWAE bound from Pyro's traces", _importance_weighted(0.0, k, nesting)
    if type(elbo) is RenyiBound:
        name = f"the Renyi bound (alpha {elbo.alpha:g}) from Pyro's traces"
        return name, _importance_weighted(float(elbo.alpha), k, nesting)
    return None


def check_against_pyro(
    vae: Any,
    elbo: ELBO,
    step_elbo: ELBO,
    x: torch.Tensor,
    *,
    step: Callable | None = None,
    seed: int = 0,
    rtol: float | None = None,
) -> dict[str, Any]:
    """Raise :class:`ReferenceMismatch` unless the training step's loss (``step``: the compiled
    step, else ``step_elbo``, the sync-free twin) equals Pyro's own loss of ``elbo`` (or, for
    an estimator Pyro has no counterpart of, ``elbo``'s eager loss) on the batch ``x`` at the
    same noise. Returns what was compared, for the run's record."""
    if rtol is None:
        rtol = 1e-9 if x.dtype == torch.float64 else 1e-4
    counterpart = pyro_counterpart(elbo)
    if counterpart is None:
        against, reference = f"the eager {type(elbo).__name__}", elbo.differentiable_loss
    else:
        against, reference = counterpart
    if step is not None:
        path = "the compiled step"
    elif step_elbo is not elbo:
        path = f"the step's sync-free {type(step_elbo).__name__}"
    else:
        path = f"the step's {type(step_elbo).__name__}"
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        pyro.set_rng_seed(seed)
        if step is not None:
            step_loss = step(x, vae.current_beta())[0]
        else:
            step_loss = step_elbo.differentiable_loss(vae.model, vae.guide, x)
        pyro.set_rng_seed(seed)
        with torch.no_grad():
            pyro_loss = reference(vae.model, vae.guide, x)
    s, p = float(torch.as_tensor(step_loss).detach()), float(torch.as_tensor(pyro_loss))
    same = math.isfinite(s) and math.isfinite(p) and abs(s - p) <= rtol * max(abs(p), 1.0)
    if not same:
        raise ReferenceMismatch(
            f"{path} gives {s:.6f} and {against} {p:.6f} on the first batch (relative "
            f"{abs(s - p) / max(abs(p), 1.0):.2e} > {rtol:.0e}): the step does not optimise "
            "the objective of this model"
        )
    return {
        "check": "pyro",
        "compared": path,
        "against": against,
        "step_loss": s,
        "pyro_loss": p,
        "batch_size": int(x.shape[0]),
    }
