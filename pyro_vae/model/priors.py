"""Priors p(z): modules that return a Pyro distribution with ``event_shape == (z_dim,)``.

The distribution has empty batch shape; ``pyro.plate("data")`` broadcasts it over the batch,
so the model reads as the generative story ``z ~ p(z)``. A prior may own parameters (learned
priors are trained jointly with the decoder).

``TraceMeanField_ELBO`` uses the analytic KL(q || p) when torch has one registered for the pair
(diagonal Gaussian guide vs ``normal`` / ``learned-normal``) and falls back to the Monte Carlo
estimate log q(z) - log p(z) otherwise (``mixture``).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn

from ..registry import Registry


class Prior(nn.Module):
    """Base class: ``prior()`` returns p(z). Options are keyword-only."""

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        if z_dim < 1:
            raise ValueError(f"z_dim must be >= 1, got {z_dim}")
        self.z_dim = z_dim

    def forward(self) -> dist.TorchDistribution:  # pragma: no cover
        raise NotImplementedError

    def attach(self, encoder: nn.Module) -> None:
        """Called once with the VAE's encoder; priors built from it (VampPrior) keep it."""


PRIORS: Registry[Prior] = Registry("prior")


class DiagonalGaussianMixture(dist.MixtureSameFamily):
    """A mixture of K diagonal Gaussians whose ``log_prob`` never builds the (..., K, D)
    tensor that ``MixtureSameFamily`` does: with a = 1 / sigma^2,

        log N(z; mu_k, sigma_k) = -1/2 [sum_j z_j^2 a_kj - 2 z_j mu_kj a_kj + mu_kj^2 a_kj]
                                  - sum_j log sigma_kj - D/2 log 2 pi,

    three matrix products of (..., D) by (D, K). Evaluating log p(x) with 5,000 samples per
    image against a 500-component VampPrior otherwise needs tens of gigabytes.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        normal = self.component_distribution.base_dist  # batch (..., K), event (D,)
        loc, scale = _unexpanded(normal.loc), _unexpanded(normal.scale)
        precision = scale.pow(-2)  # (..., K, D), usually just (K, D)
        if loc.dim() == 2:  # one set of components for every z: plain matrix products
            quad = value.pow(2) @ precision.T - 2 * value @ (loc * precision).T
        else:
            z = value.unsqueeze(-2)  # (..., 1, D)
            quad = (
                z.pow(2) @ precision.transpose(-1, -2) - 2 * z @ (loc * precision).transpose(-1, -2)
            ).squeeze(-2)
        quad = quad + (loc.pow(2) * precision).sum(-1)
        log_norm = scale.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)
        log_weights = torch.log_softmax(self.mixture_distribution.logits, dim=-1)
        return torch.logsumexp(log_weights - 0.5 * quad - log_norm, dim=-1)


def _unexpanded(t: torch.Tensor) -> torch.Tensor:
    """``t`` without the leading dimensions that ``expand`` added (stride 0), if all are."""
    lead = t.dim() - 2
    if lead > 0 and all(stride == 0 for stride in t.stride()[:lead]):
        return t[(0,) * lead]
    return t


@PRIORS.register("normal")
class StandardNormal(Prior):
    """p(z) = N(0, I)."""

    def __init__(self, z_dim: int) -> None:
        super().__init__(z_dim)
        # buffers, so the prior follows the model to its device and dtype
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


@PRIORS.register("learned-normal")
class LearnedNormal(Prior):
    """p(z) = N(mu, diag(sigma^2)) with mu and log sigma learned."""

    def __init__(self, z_dim: int) -> None:
        super().__init__(z_dim)
        self.loc = nn.Parameter(torch.zeros(z_dim))
        self.log_scale = nn.Parameter(torch.zeros(z_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.log_scale.exp()).to_event(1)


@PRIORS.register("mixture")
class GaussianMixture(Prior):
    """p(z) = sum_k pi_k N(mu_k, diag(sigma_k^2)), weights, means and scales all learned.

    No closed-form KL(q || p) exists, so mean-field training estimates it by Monte Carlo.
    """

    def __init__(self, z_dim: int, *, components: int = 10) -> None:
        super().__init__(z_dim)
        if components < 1:
            raise ValueError(f"mixture needs components >= 1, got {components}")
        self.logits = nn.Parameter(torch.zeros(components))
        # spread the initial means so the components are distinguishable
        generator = torch.Generator().manual_seed(0)
        self.locs = nn.Parameter(torch.randn(components, z_dim, generator=generator))
        self.log_scales = nn.Parameter(torch.zeros(components, z_dim))

    def forward(self) -> dist.TorchDistribution:
        return DiagonalGaussianMixture(
            dist.Categorical(logits=self.logits),
            dist.Normal(self.locs, self.log_scales.exp()).to_event(1),
        )


@PRIORS.register("vamp")
class VampPrior(Prior):
    """VampPrior (Tomczak & Welling, 2018): the aggregate posterior at K learned pseudo-inputs,

        p(z) = (1/K) sum_k q(z | u_k),

    with q the VAE's own encoder. The pseudo-inputs u_k live in data space, clipped to [0, 1]
    by a hard tanh and started near 0.05 (the paper's choices, made for image data). The
    encoder's parameters then shape the prior too: they get gradient from log p(z) as well as
    from log q(z|x). No closed-form KL exists; mean-field training estimates it by Monte Carlo.
    """

    def __init__(self, z_dim: int, data_dim: int, *, pseudo_inputs: int = 500) -> None:
        super().__init__(z_dim)
        if pseudo_inputs < 1:
            raise ValueError(f"vamp needs pseudo_inputs >= 1, got {pseudo_inputs}")
        generator = torch.Generator().manual_seed(0)
        self.pseudo_inputs = nn.Parameter(
            0.05 + 0.01 * torch.randn(pseudo_inputs, data_dim, generator=generator)
        )
        self._encoder: tuple[nn.Module, ...] = ()  # held, not registered: the VAE owns it

    def attach(self, encoder: nn.Module) -> None:
        self._encoder = (encoder,)

    @property
    def encoder(self) -> nn.Module:
        if not self._encoder:
            raise RuntimeError("vamp prior used before attach(encoder); build it with build_vae")
        return self._encoder[0]

    def inputs(self) -> torch.Tensor:
        return torch.nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0)

    def forward(self) -> dist.TorchDistribution:
        loc, scale = self.encoder(self.inputs())
        k = self.pseudo_inputs.shape[0]
        return DiagonalGaussianMixture(
            dist.Categorical(logits=torch.zeros(k, dtype=loc.dtype, device=loc.device)),
            dist.Normal(loc, scale).to_event(1),
        )
