"""How a discrete latent site is treated: one small class per treatment, in a registry, each
naming the estimator (the objective, :data:`pyro_vae.inference.ESTIMATORS`) it is estimated by.

A class variable y in {1..K} (a one-hot vector here) with prior p(y) = Cat(pi) and guide
q(y | x) = Cat(softmax(logits(x))) enters the ELBO as

    E_q(y|x) [ f(x, y) ] - KL(q(y|x) || p(y)),     f(x, y) = E_q(z|x,y)[log p(x|y,z)] - KL_z,

and its gradient with respect to the classifier can be had three ways:

- ``enumerate``: the sum over the K classes, exactly (Pyro's ``TraceEnum_ELBO`` with the site
  marked ``infer={"enumerate": "parallel"}``: the classes become a tensor dimension, no
  Python loop).
- ``score``: one sampled class and the score-function (REINFORCE) gradient
  (f - b) grad log q(y|x), with a learned per-image baseline b(x) to cut its variance
  (Williams, 1992; Mnih & Gregor, 2014, "NVIL"): Pyro's ``TraceGraph_ELBO`` with the site's
  ``infer={"baseline": {"nn_baseline": ..., "nn_baseline_input": x}}``. Unbiased.
- ``relaxed``: the Gumbel-softmax / Concrete relaxation (Jang et al., 2017; Maddison et al.,
  2017): y is a point of the simplex drawn by reparameterisation from
  ``RelaxedOneHotCategorical(tau, logits)``, scored against the same relaxation of p(y), at a
  temperature tau annealed towards 0. The objective is the relaxed model's ELBO, not the
  discrete one: the gradient is *biased* for the discrete model (less so as tau falls, while
  its variance grows). ``Trace_ELBO`` estimates it.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ..registry import Registry


class DiscreteSite(nn.Module):
    """The guide's and the model's distribution for a class site, and the estimator that fits.
    A module, so that a learned part (the score function's baseline) trains with the VAE."""

    estimated_by: str = "trace"  # the name of the registered estimator this treatment needs

    def prior(self, probs: torch.Tensor) -> dist.TorchDistribution:
        return dist.OneHotCategorical(probs=probs)

    def guide(self, logits: torch.Tensor, x: torch.Tensor) -> tuple[dist.TorchDistribution, dict]:
        """q(y | x) and the site's ``infer`` dict."""
        raise NotImplementedError  # pragma: no cover


DISCRETE_SITES: Registry[DiscreteSite] = Registry("discrete estimator")


@DISCRETE_SITES.register("enumerate")
class Enumerated(DiscreteSite):
    """Summed out exactly over the classes (``TraceEnum_ELBO``)."""

    estimated_by = "enum"

    def guide(self, logits, x):
        return dist.OneHotCategorical(logits=logits), {"enumerate": "parallel"}


@DISCRETE_SITES.register("score")
class ScoreFunction(DiscreteSite):
    """One sampled class; score-function gradient with a learned baseline b(x)
    (``TraceGraph_ELBO``; the baseline is trained by Pyro's (f - b)^2 term)."""

    estimated_by = "score-function"

    def __init__(self, *, data_dim: int, baseline_hidden: int = 100) -> None:
        super().__init__()
        self.baseline = nn.Sequential(
            nn.Linear(data_dim, baseline_hidden), nn.ReLU(), nn.Linear(baseline_hidden, 1)
        )

    def guide(self, logits, x):
        baseline = {"nn_baseline": _Squeezed(self.baseline), "nn_baseline_input": x}
        return dist.OneHotCategorical(logits=logits), {"baseline": baseline}


class _Squeezed(nn.Module):
    """b(x) of shape (N,), as the site's downstream cost is."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


@DISCRETE_SITES.register("relaxed")
class Relaxed(DiscreteSite):
    """Gumbel-softmax: reparameterised draws from the Concrete distribution at temperature
    ``temperature`` (annealed by the trainer: tau_t = max(tau_min, tau_0 exp(-r t)), Jang et
    al., 2017). Biased for the discrete model."""

    def __init__(self, *, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise ValueError(f"the relaxation's temperature must be > 0, got {temperature}")
        super().__init__()
        self.temperature = float(temperature)

    def prior(self, probs):
        return dist.RelaxedOneHotCategorical(self._tau(probs), probs=probs)

    def guide(self, logits, x):
        return dist.RelaxedOneHotCategorical(self._tau(logits), logits=logits), {}

    def _tau(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.temperature, dtype=like.dtype, device=like.device)
