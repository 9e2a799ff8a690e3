"""Trace_ELBO and TraceMeanField_ELBO without a host synchronisation in the step.

Pyro's ``Trace_ELBO.differentiable_loss`` and ``TraceMeanField_ELBO`` turn partial sums into
Python floats (``torch_item``) on every call: on a GPU each is a host-device synchronisation,
and a graph traced for compilation cannot contain them. These two compute the same surrogate
loss from the same importance traces with tensors only, with K particles vectorised; the tests
check them equal to Pyro's for the same noise, and the trainer's fast path uses them
(:func:`sync_free`).

    Monte Carlo:  -ELBO = -(1/K) sum_k [log p(x, z_k) - log q(z_k|x)]
    mean field:   -ELBO = -(1/K) sum_k log p(x|z_k) + KL(q(z|x) || p(z))  (KL in closed form
                  where torch has it, else the Monte Carlo term, as in TraceMeanField_ELBO)
"""

from __future__ import annotations

import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence

from .surrogate import SurrogateELBO


class _VectorisedELBO(SurrogateELBO):
    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1) -> None:
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
        )

    def _traces(self, model, guide, args, kwargs):
        ((model_trace, guide_trace),) = self._get_traces(model, guide, args, kwargs)
        return model_trace, guide_trace


class MonteCarloELBO(_VectorisedELBO):
    """``Trace_ELBO`` for reparameterised guides, sync-free and vectorised over particles."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        model_trace, guide_trace = self._traces(model, guide, args, kwargs)
        elbo = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo + site["log_prob_sum"]
        for site in guide_trace.nodes.values():
            if site["type"] == "sample" and not site["is_observed"]:
                elbo = elbo - site["log_prob_sum"]
        return -elbo / self.num_particles


class MeanFieldELBO(_VectorisedELBO):
    """``TraceMeanField_ELBO``, sync-free and vectorised over particles."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        model_trace, guide_trace = self._traces(model, guide, args, kwargs)
        elbo = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                elbo = elbo + site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            try:
                kl = kl_divergence(guide_site["fn"], site["fn"])
            except NotImplementedError:  # Monte Carlo, as TraceMeanField_ELBO falls back to
                elbo = elbo + site["log_prob_sum"] - guide_site["log_prob_sum"]
                continue
            kl = scale_and_mask(kl, guide_site["scale"], guide_site["mask"])
            elbo = elbo - kl.sum()
        return -elbo / self.num_particles


def sync_free(elbo: ELBO) -> ELBO:
    """The sync-free equivalent of ``elbo`` (this project's own ELBOs are already)."""
    if isinstance(elbo, (SurrogateELBO, TraceEnum_ELBO, TraceGraph_ELBO)):
        # enumeration and the score function have no twin: Pyro reads their loss for its NaN
        # warning, one host sync per step on a GPU (none on the CPU)
        return elbo
    if isinstance(elbo, TraceMeanField_ELBO):
        return MeanFieldELBO(elbo.num_particles, elbo.max_plate_nesting)
    if isinstance(elbo, Trace_ELBO):
        return MonteCarloELBO(elbo.num_particles, elbo.max_plate_nesting)
    raise ValueError(f"no sync-free equivalent of {type(elbo).__name__}")
