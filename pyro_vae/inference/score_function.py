"""The score-function (REINFORCE) ELBO with baselines, usable as a differentiable loss.

Pyro's :class:`pyro.infer.TraceGraph_ELBO` estimates the gradient of a non-reparameterisable
guide site y by its downstream cost alone, less a baseline b,

    grad ELBO ~ (f_downstream(y) - b) grad log q(y | x) + (reparameterised terms),

and trains the baseline by (f - b)^2 (Williams, 1992; Mnih & Gregor, 2014). Pyro offers it
only as ``loss_and_grads``; :class:`ScoreFunctionELBO` adds ``differentiable_loss`` (the
surrogate loss, whose value is replaced by the loss's: -ELBO at the draw), the form every
other estimator here has, so the trainer and the reference checks treat it alike.

One addition to Pyro's estimator: a site may name the rows whose draw is used at all,
``infer={"score_rows": rows}``, and the score terms of the other rows are dropped. Pyro keeps
them (their downstream cost is masked to zero, and (0 - b) grad log q has mean zero), which
only adds variance, and trains q(y|x) on noise: in M2, on every labelled row, whose branch
never reads the unlabelled branch's y. (A site's mask alone cannot say it: beta = 0 masks
a site whose draw is still used below it.)
"""

from __future__ import annotations

import torch
from pyro.infer import TraceGraph_ELBO
from pyro.infer.util import is_identically_zero


class ScoreFunctionELBO(TraceGraph_ELBO):
    """``TraceGraph_ELBO`` with ``differentiable_loss``: value -ELBO, gradient that of the
    surrogate (score-function terms with baselines, reparameterised terms, baseline loss)."""

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        for site in guide_trace.nodes.values():
            parts, rows = site.get("score_parts"), site.get("infer", {}).get("score_rows")
            if parts is None or rows is None or is_identically_zero(parts.score_function):
                continue
            masked = parts.score_function.masked_fill(~rows, 0.0)
            site["score_parts"] = parts._replace(score_function=masked)
        return model_trace, guide_trace

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        elbo, surrogate_loss = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        # the value is exactly -ELBO (no cancellation against the baseline's large loss)
        return (-elbo).detach() + (surrogate_loss - surrogate_loss.detach())
