"""Decoder likelihoods p(x | z): decoder output -> Pyro distribution over a flat image.

Each family is one small ``nn.Module`` registered by name. The decoder emits
``params_per_pixel * data_dim`` numbers per image; the family turns them into a distribution
with ``event_shape == (data_dim,)``. A family may own parameters of its own (the learned
per-pixel sigma of ``gaussian-learned``), which is why they are modules.

Adding one::

    @LIKELIHOODS.register("laplace")
    class Laplace(Likelihood):
        def forward(self, out):
            return dist.Laplace(out, self.scale).to_event(1)
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry


class DataSupportError(ValueError):
    """Observed data lies outside the support of the chosen likelihood."""


class Likelihood(nn.Module):
    """Base class: maps decoder output of shape ``(..., params_per_pixel * data_dim)`` to p(x|z)."""

    params_per_pixel: int = 1

    def __init__(self, data_dim: int) -> None:
        super().__init__()
        self.data_dim = data_dim

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:  # pragma: no cover
        raise NotImplementedError

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """E[x | z], used for reconstructions and samples in figures."""
        return self(out).mean

    def check_data(self, x: torch.Tensor) -> None:
        """Raise :class:`DataSupportError` if ``x`` cannot be observed under this family."""
        if not torch.isfinite(x).all():
            raise DataSupportError("data contains NaN or infinite values")


def _check_unit_interval(x: torch.Tensor, name: str) -> None:
    if x.min() < 0 or x.max() > 1:
        raise DataSupportError(
            f"{name} needs values in [0, 1]; got min {x.min().item():.4g}, "
            f"max {x.max().item():.4g} (rescale the data)"
        )


LIKELIHOODS: Registry[Likelihood] = Registry("likelihood")


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
    """Independent Bernoulli pixels with logits from the decoder; binary data only."""

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=out).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)

    def check_data(self, x: torch.Tensor) -> None:
        super().check_data(x)
        if not ((x == 0) | (x == 1)).all():
            raise DataSupportError(
                "bernoulli needs binary pixels (0 or 1) but the data has grey levels: "
                "use --binarize dynamic|static, or --likelihood continuous-bernoulli"
            )


@LIKELIHOODS.register("continuous-bernoulli")
class ContinuousBernoulli(Likelihood):
    """Continuous Bernoulli on [0, 1] (Loaiza-Ganem & Cunningham, 2019): a proper density for
    grey levels, unlike the "BCE on grey pixels" trick, thanks to its normaliser C(lambda)."""

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=out).to_event(1)

    def check_data(self, x: torch.Tensor) -> None:
        super().check_data(x)
        _check_unit_interval(x, "continuous-bernoulli")


@LIKELIHOODS.register("gaussian")
class Gaussian(Likelihood):
    """Normal(decoder output, sigma) per pixel, sigma fixed."""

    def __init__(self, data_dim: int, sigma: float = 0.1) -> None:
        super().__init__(data_dim)
        if not sigma > 0:
            raise ValueError(f"gaussian needs sigma > 0, got {sigma}")
        self.sigma = float(sigma)

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(out, self.sigma).to_event(1)


@LIKELIHOODS.register("gaussian-learned")
class GaussianLearned(Likelihood):
    """Normal(decoder output, sigma_i) with a learned per-pixel sigma_i >= sigma_floor.

    Without a floor the ELBO is unbounded: a pixel the decoder predicts exactly (MNIST's
    always-black border) lets sigma -> 0 and log N(x; mu, sigma) -> +inf. Here
    ``sigma = sigma_floor + softplus(raw)``, so log p(x|z) <= -data_dim * log(sigma_floor
    * sqrt(2 pi)).
    """

    def __init__(self, data_dim: int, sigma_floor: float = 0.01, sigma_init: float = 0.1) -> None:
        super().__init__(data_dim)
        if not sigma_floor > 0:
            raise ValueError(f"gaussian-learned needs sigma_floor > 0, got {sigma_floor}")
        if not sigma_init > sigma_floor:
            raise ValueError("gaussian-learned needs sigma_init > sigma_floor")
        self.sigma_floor = float(sigma_floor)
        # inverse softplus, so sigma starts at sigma_init
        raw = math.log(math.expm1(sigma_init - sigma_floor))
        self.raw_sigma = nn.Parameter(torch.full((data_dim,), raw))

    def sigma(self) -> torch.Tensor:
        return self.sigma_floor + F.softplus(self.raw_sigma)

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(out, self.sigma()).to_event(1)

    def log_prob_bound(self) -> float:
        """The supremum of log p(x|z) that the floor guarantees."""
        return -self.data_dim * math.log(self.sigma_floor * math.sqrt(2 * math.pi))
