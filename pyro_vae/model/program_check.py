"""What every objective here assumes of a model and guide, checked on the user's code before
a run starts.

The bounds are per image (nats per image, IWAE's log-mean-exp over each image's particles, the
data's scale under minibatches), so each image must be one slice of ``pyro.plate("data")``:

- the model observes the data at a site inside ``plate("data")``;
- every latent site, in the model and in the guide, lives inside that plate (a global latent,
  shared by all images, would make the IWAE bound a joint bound over the batch: Pyro's
  ``RenyiELBO`` silently becomes one);
- the guide samples every latent site the model has, and no other.

:func:`check_program` traces both programs once on a small batch and says in one line what is
wrong, before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from .. import param_store


class ProgramError(ValueError):
    """A model or guide that the per-image objectives cannot train."""


def _sample_sites(trace: poutine.Trace) -> dict[str, dict]:
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    }


def _in_data_plate(site: dict) -> bool:
    return any(frame.name == "data" for frame in site["cond_indep_stack"])


def check_program(model: Callable, guide: Callable, x: torch.Tensor) -> None:
    """Raise :class:`ProgramError` unless ``model`` and ``guide`` have the structure the
    module doc describes, traced on the rows ``x``. Random streams and Pyro's parameter
    store are left as they were."""
    with torch.random.fork_rng(devices=[]), param_store.off(), torch.no_grad():
        try:
            guide_trace = poutine.trace(guide).get_trace(x)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
        except (RuntimeError, ValueError, TypeError, IndexError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ProgramError(f"the model or guide fails on a batch of rows: {first}") from None
    model_sites, guide_sites = _sample_sites(model_trace), _sample_sites(guide_trace)
    observed = [n for n, s in model_sites.items() if s["is_observed"]]
    if not observed:
        raise ProgramError("the model observes nothing: give the data site obs=x")
    for name in observed:
        if not _in_data_plate(model_sites[name]):
            raise ProgramError(
                f"the observed site {name!r} is not inside pyro.plate('data', x.shape[0]): "
                "the objectives are per image"
            )
    for where, sites in (("model", model_sites), ("guide", guide_sites)):
        for name, site in sites.items():
            if not site["is_observed"] and not _in_data_plate(site):
                raise ProgramError(
                    f"the latent site {name!r} of the {where} is outside pyro.plate('data'): "
                    "every latent must be one per image (a global latent makes the bounds "
                    "joint over the batch)"
                )
    latent = {n for n, s in model_sites.items() if not s["is_observed"]}
    missing = sorted(latent - set(guide_sites))
    if missing:
        raise ProgramError(f"the guide does not sample the model's latent site(s) {missing}")
    extra = sorted(n for n, s in guide_sites.items() if n not in model_sites)
    if extra:
        raise ProgramError(f"the guide samples site(s) {extra} that the model does not have")
