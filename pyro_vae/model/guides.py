"""Guides q(z|x): modules that turn the encoder's output into a Pyro distribution with
``event_shape == (z_dim,)``, amortised over x. (A VAE keeps its guide module as ``vae.q``;
``vae.guide`` is the Pyro program that samples from it.)

- ``diagonal``: N(loc(x), diag scale(x)^2), the usual VAE encoder; analytic KL against
  Gaussian priors.
- ``low-rank``: N(loc(x), W(x) W(x)^T + diag scale(x)^2) with W(x) a z_dim x rank matrix read
  from the encoder's features: correlated posteriors at O(z_dim * rank) extra outputs. Sampled
  as loc + L eps through the Cholesky factor L of the covariance (z_dim^3 per image, small for
  latent sizes up to a few hundred), so the noise eps = L^-1 (z - loc) is recoverable and the
  hand-written reference can replay the very same sample.
- ``iaf``: an inverse autoregressive flow on top of the diagonal Gaussian (Kingma et al.,
  2016): z_0 ~ N(loc(x), diag scale(x)^2), then ``flows`` steps
  z_t = s_t * z_{t-1} + (1 - s_t) * m_t,  (m_t, logit s_t) = MADE_t(z_{t-1}),  s_t = sigmoid(.)
  (the paper's numerically stable form), each a ``pyro.distributions.transforms
  .AffineAutoregressive``; log q(z|x) = log N(z_0) - sum_t sum_j log s_tj. Sampling is one
  pass per step; evaluating log q at a point that was not just sampled (the STL and DReG
  estimators do) inverts each step one dimension at a time, as Pyro does.

None has a closed-form KL against the priors except ``diagonal``; ``TraceMeanField_ELBO``
then estimates the KL by Monte Carlo.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import AffineAutoregressive
from pyro.nn import AutoRegressiveNN
from torch import nn

from ..registry import Registry


class Guide(nn.Module):
    """Base class: ``forward(encoder, x)`` returns q(z|x). Options are keyword-only."""

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        self.z_dim = z_dim

    def forward(self, encoder: nn.Module, x: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError  # pragma: no cover

    def noise(self, encoder: nn.Module, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The standard-normal noise eps that the reparameterised sample z came from."""
        raise NotImplementedError  # pragma: no cover


GUIDES: Registry[Guide] = Registry("guide")


@GUIDES.register("diagonal")
class DiagonalGaussian(Guide):
    """q(z|x) = N(loc(x), diag scale(x)^2)."""

    def forward(self, encoder: nn.Module, x: torch.Tensor) -> dist.TorchDistribution:
        loc, scale = encoder(x)
        return dist.Normal(loc, scale).to_event(1)

    def noise(self, encoder: nn.Module, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        loc, scale = encoder(x)
        return (z - loc) / scale


@GUIDES.register("low-rank")
class LowRankGaussian(Guide):
    """q(z|x) = N(loc(x), W(x) W(x)^T + diag scale(x)^2), W(x) of shape (z_dim, rank)."""

    def __init__(self, z_dim: int, feature_dim: int, *, rank: int = 2) -> None:
        super().__init__(z_dim)
        if rank < 1:
            raise ValueError(f"low-rank needs rank >= 1, got {rank}")
        self.rank = rank
        self.factor = nn.Linear(feature_dim, z_dim * rank)
        with torch.no_grad():  # start close to the diagonal guide
            self.factor.weight.mul_(0.1)
            self.factor.bias.zero_()

    def parameters_of(self, encoder: nn.Module, x: torch.Tensor):
        """(loc, scale, W) for the batch x."""
        h = encoder.features(x)
        loc, scale = encoder.head(h)
        w = self.factor(h).reshape(*h.shape[:-1], self.z_dim, self.rank)
        return loc, scale, w

    def scale_tril(self, encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, scale, w = self.parameters_of(encoder, x)
        cov = w @ w.transpose(-1, -2) + torch.diag_embed(scale**2)
        return loc, torch.linalg.cholesky(cov)

    def forward(self, encoder: nn.Module, x: torch.Tensor) -> dist.TorchDistribution:
        loc, tril = self.scale_tril(encoder, x)
        return dist.MultivariateNormal(loc, scale_tril=tril)

    def noise(self, encoder: nn.Module, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        loc, tril = self.scale_tril(encoder, x)
        diff = (z - loc).unsqueeze(-1)
        tril = tril.expand(*diff.shape[:-2], *tril.shape[-2:])
        return torch.linalg.solve_triangular(tril, diff, upper=False).squeeze(-1)


@GUIDES.register("iaf")
class InverseAutoregressiveFlow(Guide):
    """``flows`` stable IAF steps (Kingma et al., 2016) on the diagonal Gaussian of the encoder;
    each step a MADE with ``flow_hidden`` hidden units (Pyro's ``AutoRegressiveNN``)."""

    def __init__(self, z_dim: int, *, flows: int = 2, flow_hidden: int = 0) -> None:
        super().__init__(z_dim)
        if z_dim < 2:
            raise ValueError("iaf needs z_dim >= 2: a one-dimensional flow is a plain affine map")
        if flows < 1:
            raise ValueError(f"iaf needs flows >= 1, got {flows}")
        hidden = flow_hidden or 2 * z_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the MADEs' input orderings and initial weights: fixed
            self.steps = nn.ModuleList(
                AffineAutoregressive(AutoRegressiveNN(z_dim, [hidden]), stable=True)
                for _ in range(flows)
            )

    def forward(self, encoder: nn.Module, x: torch.Tensor) -> dist.TorchDistribution:
        loc, scale = encoder(x)
        return dist.TransformedDistribution(dist.Normal(loc, scale).to_event(1), list(self.steps))

    def noise(self, encoder: nn.Module, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        loc, scale = encoder(x)
        for step in reversed(self.steps):
            z = step.inv(z)
        return (z - loc) / scale
