"""Reading Pyro traces: which sites are samples, which of those are latent, and their plain
log-densities."""

from __future__ import annotations

import torch
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


def plain_log_density(site: dict) -> torch.Tensor:
    """A sample site's log-density as the model states it, without the weights put on it.

    beta's scale (and its mask at beta = 0) are weights of an objective and are left out. A
    mask that selects rows (a tensor) is kept: it is part of the model, as in M2, where each
    row goes through the labelled or the unlabelled branch and the other adds nothing. A site
    marked ``infer={"objective_term": True}`` (M2's alpha log q(y|x)) is a term of the
    training objective, not a density: it adds zero."""
    if site["infer"].get("objective_term"):
        return torch.zeros(())
    return rows_kept(site, site["fn"].log_prob(site["value"]))


def rows_kept(site: dict, value: torch.Tensor) -> torch.Tensor:
    """``value`` (per row) zeroed on the rows a site's mask tensor leaves out."""
    mask = site["mask"]
    if torch.is_tensor(mask):
        return torch.where(mask, value, torch.zeros_like(value))
    return value
