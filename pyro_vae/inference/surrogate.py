"""Base class for this project's ELBOs: objectives defined by one differentiable loss.

Pyro's ``ELBO`` asks for ``loss`` and ``loss_and_grads``; an objective that can write its
surrogate loss as a tensor gets both from ``differentiable_loss``. Traces are Pyro's own
importance traces (guide run, model replayed against it, log-densities with their scales and
masks), as in ``Trace_ELBO``.
"""

from __future__ import annotations

import torch
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import is_validation_enabled
from pyro.util import check_if_enumerated


class SurrogateELBO(ELBO):
    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = get_importance_trace(
            "flat", self.max_plate_nesting, model, guide, args, kwargs
        )
        if is_validation_enabled():
            check_if_enumerated(guide_trace)
        return model_trace, guide_trace

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()
