"""Reading Pyro traces: which sites are samples, and which of those are latent."""

from __future__ import annotations

from pyro.poutine import Trace
from pyro.poutine.util import site_is_subsample


def is_sample(site: dict) -> bool:
    """A sample site proper (plates record their subsample as a 'sample' site too)."""
    return site["type"] == "sample" and not site_is_subsample(site)


def latent_sites(trace: Trace) -> list[str]:
    """The names of the trace's unobserved sample sites, in the order they were sampled."""
    return [
        name for name, site in trace.nodes.items() if is_sample(site) and not site["is_observed"]
    ]
