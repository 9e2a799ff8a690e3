"""Decoder likelihoods p(x | z): decoder output -> Pyro distribution over a flat image.

Each family is one small ``nn.Module`` registered by name. The decoder emits
``params_per_pixel * data_dim`` numbers per image; the family turns them into a distribution
with ``event_shape == (data_dim,)``. A family may own parameters of its own (the learned
per-pixel sigma of ``gaussian-learned``, the per-feature dispersion of ``negative-binomial``),
which is why they are modules. The observation ``x`` is passed too, for families whose
parameters depend on it (the library size of the count families).

Families by the data they describe (``data_kind``):

- binary: ``bernoulli``;
- [0, 1]: ``continuous-bernoulli``, ``beta``;
- real: ``gaussian``, ``gaussian-learned``, ``laplace``;
- counts: ``poisson``, ``negative-binomial``, ``zero-inflated-negative-binomial``.

Adding one::

    @LIKELIHOODS.register("cauchy")
    class Cauchy(Likelihood):
        def forward(self, out, x=None):
            return dist.Cauchy(out, 0.05).to_event(1)
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Registry


class DataSupportError(ValueError):
    """Observed data lies outside the support of the chosen likelihood."""


class Likelihood(nn.Module):
    """Base class: maps decoder output of shape ``(..., params_per_pixel * data_dim)`` to p(x|z).

    Options (``sigma``, ``library``, ...) are keyword-only constructor parameters."""

    params_per_pixel: int = 1
    data_kind: str = "real"  # "binary", "unit-interval", "real" or "counts"
    log_input: bool = False  # the encoder sees log(1 + x) (counts span orders of magnitude)
    # one line each on what the decoder emits and what ``mean`` returns (docs/api.md's table)
    decoder_output: str = "the family's parameters"
    mean_output: str = "E[x | z] of the distribution"

    def __init__(self, data_dim: int) -> None:
        super().__init__()
        self.data_dim = data_dim

    def forward(
        self, out: torch.Tensor, x: torch.Tensor | None = None
    ) -> dist.TorchDistribution:  # pragma: no cover
        raise NotImplementedError

    def mean(self, out: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z], used for reconstructions and samples in figures."""
        return self(out, x).mean

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

    data_kind = "binary"
    decoder_output = "logits of P(x_i = 1), one per pixel"
    mean_output = "sigmoid(logits): the pixel probabilities, in (0, 1)"

    def forward(self, out: torch.Tensor, x: torch.Tensor | None = None) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=out).to_event(1)

    def mean(self, out: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
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

    data_kind = "unit-interval"
    decoder_output = "logits of the shape lambda_i, one per pixel"
    mean_output = "E[x_i] for lambda_i = sigmoid(logits), in (0, 1); not lambda_i itself"

    def forward(self, out: torch.Tensor, x: torch.Tensor | None = None) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=out).to_event(1)

    def check_data(self, x: torch.Tensor) -> None:
        super().check_data(x)
        _check_unit_interval(x, "continuous-bernoulli")


@LIKELIHOODS.register("gaussian")
class Gaussian(Likelihood):
    """Normal(decoder output, sigma) per pixel, sigma fixed."""

    decoder_output = "the mean of each pixel (sigma is the fixed option)"
    mean_output = "the decoder output itself"

    def __init__(self, data_dim: int, *, sigma: float = 0.1) -> None:
        super().__init__(data_dim)
        if not sigma > 0:
            raise ValueError(f"gaussian needs sigma > 0, got {sigma}")
        self.sigma = float(sigma)

    def forward(self, out: torch.Tensor, x: torch.Tensor | None = None) -> dist.TorchDistribution:
        return dist.Normal(out, self.sigma).to_event(1)


class LearnedScale(nn.Module):
    """A per-pixel scale ``floor + softplus(raw)``, started at ``init``.

    Without a floor a location-scale likelihood's ELBO is unbounded: a pixel the decoder
    predicts exactly (MNIST's always-black border) lets the scale go to 0 and the density to
    +inf. With it the density is bounded.
    """

    def __init__(self, data_dim: int, floor: float, init: float, family: str) -> None:
        super().__init__()
        if not floor > 0:
            raise ValueError(f"{family} needs sigma_floor > 0, got {floor}")
        if not init > floor:
            raise ValueError(f"{family} needs sigma_init > sigma_floor")
        self.floor = float(floor)
        # inverse softplus, so the scale starts at init
        self.raw = nn.Parameter(torch.full((data_dim,), math.log(math.expm1(init - floor))))

    def forward(self) -> torch.Tensor:
        return self.floor + F.softplus(self.raw)


@LIKELIHOODS.register("gaussian-learned")
class GaussianLearned(Likelihood):
    """Normal(decoder output, sigma_i) with a learned per-pixel sigma_i >= sigma_floor, so
    log p(x|z) <= -data_dim * log(sigma_floor * sqrt(2 pi)) (see :class:`LearnedScale`)."""

    decoder_output = "the mean of each pixel (sigma_i is learned, a parameter of the family)"
    mean_output = "the decoder output itself"

    def __init__(
        self, data_dim: int, *, sigma_floor: float = 0.01, sigma_init: float = 0.1
    ) -> None:
        super().__init__(data_dim)
        self.scale = LearnedScale(data_dim, sigma_floor, sigma_init, "gaussian-learned")

    @property
    def sigma_floor(self) -> float:
        return self.scale.floor

    @property
    def raw_sigma(self) -> nn.Parameter:
        return self.scale.raw

    def sigma(self) -> torch.Tensor:
        return self.scale()

    def forward(self, out: torch.Tensor, x: torch.Tensor | None = None) -> dist.TorchDistribution:
        return dist.Normal(out, self.sigma()).to_event(1)

    def log_prob_bound(self) -> float:
        """The supremum of log p(x|z) that the floor guarantees."""
        return -self.data_dim * math.log(self.sigma_floor * math.sqrt(2 * math.pi))


@LIKELIHOODS.register("laplace")
class Laplace(Likelihood):
    """Laplace(decoder output, b_i) with a learned per-pixel scale b_i >= sigma_floor: the
    L1 reconstruction loss as a likelihood; log p(x|z) <= -data_dim * log(2 sigma_floor)."""

    decoder_output = "the location of each pixel (the scale b_i is learned by the family)"
    mean_output = "the decoder output itself"

    def __init__(
        self, data_dim: int, *, sigma_floor: float = 0.01, sigma_init: float = 0.1
    ) -> None:
        super().__init__(data_dim)
        self.scale = LearnedScale(data_dim, sigma_floor, sigma_init, "laplace")

    def forward(self, out: torch.Tensor, x: torch.Tensor | None = None) -> dist.TorchDistribution:
        return dist.Laplace(out, self.scale()).to_event(1)

    def log_prob_bound(self) -> float:
        return -self.data_dim * math.log(2 * self.scale.floor)


@LIKELIHOODS.register("beta")
class Beta(Likelihood):
    """Beta(a, b) per pixel, a and b from the decoder (softplus), for grey levels in [0, 1].

    A Beta density is 0 or infinite at exactly 0 and 1, where most MNIST pixels sit, so the
    family models x through the fixed affine map x' = eps + (1 - 2 eps) x, x' ~ Beta(a, b):
    log p(x|z) = sum_i [log Beta(x'_i; a_i, b_i) + log(1 - 2 eps)] (change of variables).
    That is a proper density on [-d, 1 + d], d = eps / (1 - 2 eps), an interval that holds
    the data; on [0, 1] alone it integrates to slightly less than 1, so its log-likelihoods
    are, if anything, pessimistic.
    """

    params_per_pixel = 2
    data_kind = "unit-interval"
    min_concentration = 1e-3
    decoder_output = "2 × data_dim values: a_i, then b_i, each before softplus (+ 1e-3)"
    mean_output = "(a / (a + b) - eps) / (1 - 2 eps): E[x_i], the squeeze undone"

    def __init__(self, data_dim: int, *, beta_squeeze: float = 1e-3) -> None:
        super().__init__(data_dim)
        if not 0 < beta_squeeze < 0.5:
            raise ValueError(f"beta needs 0 < beta_squeeze < 0.5, got {beta_squeeze}")
        self.eps = float(beta_squeeze)

    def concentrations(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = out[..., : self.data_dim], out[..., self.data_dim :]
        return (
            F.softplus(a) + self.min_concentration,
            F.softplus(b) + self.min_concentration,
        )

    def forward(self, out: torch.Tensor, x: torch.Tensor | None = None) -> dist.TorchDistribution:
        a, b = self.concentrations(out)
        # x = (x' - eps) / (1 - 2 eps): the inverse of the squeeze, so log_prob(x) includes
        # the constant log-Jacobian log(1 - 2 eps) per pixel
        unsqueeze = dist.transforms.AffineTransform(
            -self.eps / (1 - 2 * self.eps), 1 / (1 - 2 * self.eps)
        )
        return dist.TransformedDistribution(dist.Beta(a, b), [unsqueeze]).to_event(1)

    def mean(self, out: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        a, b = self.concentrations(out)
        return (a / (a + b) - self.eps) / (1 - 2 * self.eps)

    def check_data(self, x: torch.Tensor) -> None:
        super().check_data(x)
        _check_unit_interval(x, "beta")


# --- counts ----------------------------------------------------------------------------------

LIBRARY_OPTIONS = ("none", "observed")


class CountLikelihood(Likelihood):
    """Base of the count families: the decoder gives the log of the mean count per feature.

    ``library="none"``: mu = exp(out). ``library="observed"`` (single-cell models, e.g. scVI,
    Lopez et al. 2018): mu = l * softmax(out) with l = sum_i x_i the observed library size, so
    the decoder describes proportions and sequencing depth is not something z must encode.
    Without an observation (sampling from the prior) l = 1: the means are proportions.
    """

    data_kind = "counts"
    log_input = True

    def __init__(self, data_dim: int, *, library: str = "none") -> None:
        super().__init__(data_dim)
        if library not in LIBRARY_OPTIONS:
            raise ValueError(f"library must be one of {LIBRARY_OPTIONS}, got {library!r}")
        self.library = library

    def log_mean(self, out: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """log mu for the first ``data_dim`` decoder outputs."""
        out = out[..., : self.data_dim]
        if self.library == "none":
            return out
        log_proportions = torch.log_softmax(out, dim=-1)
        if x is None:
            return log_proportions
        return log_proportions + torch.log(x.sum(-1, keepdim=True))

    def check_data(self, x: torch.Tensor) -> None:
        super().check_data(x)
        if (x < 0).any() or (x != torch.round(x)).any():
            raise DataSupportError(
                f"{type(self).registry_name} needs non-negative integer counts; got values "
                "like " + f"{float(x[(x < 0) | (x != torch.round(x))][0]):.4g}"
            )
        if self.library == "observed" and (x.sum(-1) == 0).any():
            raise DataSupportError(
                "library='observed' needs every row to have at least one count "
                f"({int((x.sum(-1) == 0).sum())} rows are all zero): drop them or use "
                "library='none'"
            )


@LIKELIHOODS.register("poisson")
class Poisson(CountLikelihood):
    """Independent Poisson(mu_i) counts."""

    decoder_output = "log mu_i per feature (library='observed': logits of the proportions)"
    mean_output = "mu_i: exp(out), or softmax(out) × library size (proportions without x)"

    def forward(self, out: torch.Tensor, x: torch.Tensor | None = None) -> dist.TorchDistribution:
        return dist.Poisson(self.log_mean(out, x).exp()).to_event(1)


@LIKELIHOODS.register("negative-binomial")
class NegativeBinomial(CountLikelihood):
    """Negative binomial with mean mu_i and a learned per-feature inverse dispersion theta_i:
    Var = mu + mu^2 / theta (overdispersed counts; theta -> inf is Poisson).

    In torch's parametrisation, total_count = theta and logits = log mu - log theta.
    """

    decoder_output = Poisson.decoder_output + "; theta_i is learned by the family"
    mean_output = Poisson.mean_output

    def __init__(self, data_dim: int, *, library: str = "none") -> None:
        super().__init__(data_dim, library=library)
        self.log_theta = nn.Parameter(torch.zeros(data_dim))

    def theta(self) -> torch.Tensor:
        return self.log_theta.exp()

    def forward(self, out: torch.Tensor, x: torch.Tensor | None = None) -> dist.TorchDistribution:
        logits = self.log_mean(out, x) - self.log_theta
        return dist.NegativeBinomial(total_count=self.theta(), logits=logits).to_event(1)

    def mean(self, out: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return self.log_mean(out, x).exp()


@LIKELIHOODS.register("zero-inflated-negative-binomial")
class ZeroInflatedNegativeBinomial(NegativeBinomial):
    """x_i = 0 with probability pi_i (a dropout gate from the decoder), else NB(mu_i, theta_i);
    the decoder emits log mu and the gate's logit for every feature."""

    params_per_pixel = 2
    decoder_output = "2 × data_dim values: log mu_i as for negative-binomial, then gate logits"
    mean_output = "(1 - pi_i) × mu_i, with the dropout probability pi_i = sigmoid(gate logit)"

    def gate_logits(self, out: torch.Tensor) -> torch.Tensor:
        return out[..., self.data_dim :]

    def forward(self, out: torch.Tensor, x: torch.Tensor | None = None) -> dist.TorchDistribution:
        logits = self.log_mean(out, x) - self.log_theta
        return dist.ZeroInflatedNegativeBinomial(
            total_count=self.theta(), logits=logits, gate_logits=self.gate_logits(out)
        ).to_event(1)

    def mean(self, out: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(-self.gate_logits(out)) * self.log_mean(out, x).exp()
