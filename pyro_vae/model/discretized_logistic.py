"""The discretized logistic likelihood of 8-bit images (Kingma et al., 2016, IAF; Salimans et
al., 2017, PixelCNN++): a probability mass over the 256 grey levels of each pixel.

A pixel holds k / 255, k = 0..255. On [-1, 1] its bin is centred at y = 2 k / 255 - 1 with
half-width h = 1 / 255; the decoder gives a logistic's location mu and log-scale log s, and

    P(k) = sigma((y + h - mu) / s) - sigma((y - h - mu) / s),

the two edge bins taking the logistic's tails: P(0) = sigma((y + h - mu) / s) and
P(255) = 1 - sigma((y - h - mu) / s). The 256 masses sum to 1, so -log p(x|z) is a code length
and reads as bits per dimension directly (:mod:`pyro_vae.inference.bits`).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch.distributions.utils import broadcast_all

from .likelihoods import LIKELIHOODS, DataSupportError, Likelihood

EIGHT_BIT = "8-bit"  # the data kind: k / 255, k = 0..255
LEVELS = 255  # the largest k
HALF_BIN = 1.0 / LEVELS  # half a bin's width on [-1, 1]
GRID_TOLERANCE = 1e-4  # how far from k / 255 a value may be and still be level k
NO_SHAPE = torch.Size()


class _EightBit(constraints.Constraint):
    """Values k / 255 (k = 0..255) to within :data:`GRID_TOLERANCE`."""

    is_discrete = True
    event_dim = 0

    def check(self, value: torch.Tensor) -> torch.Tensor:
        k = torch.round(value * LEVELS)
        inside = (k >= 0) & (k <= LEVELS)
        return inside & ((value - k / LEVELS).abs() <= GRID_TOLERANCE)


eight_bit = _EightBit()


class DiscretizedLogistic(TorchDistribution):
    """One pixel's discretized logistic, element-wise: ``loc`` mu and ``log_scale`` log s on
    the [-1, 1] scale, values k / 255 on [0, 1] (batch shape: that of the parameters; use
    ``.to_event(1)`` for an image).

    ``log_prob`` uses sigma(a) - sigma(b) = sigma(a) sigma(-b) (1 - exp(-(a - b))), which
    holds exactly and is a sum of log-sigmoids and log(-expm1(-2h / s)): it never
    subtracts two rounded probabilities, so it needs no fallback where the bin's mass is
    tiny (PixelCNN++'s code switches there to log pdf(y) - log 127.5, an approximation).
    """

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    support = eight_bit
    has_rsample = False

    def __init__(
        self, loc: torch.Tensor, log_scale: torch.Tensor, validate_args: bool | None = None
    ) -> None:
        self.loc, self.log_scale = broadcast_all(loc, log_scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> DiscretizedLogistic:
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.log_scale = self.log_scale.expand(batch_shape)
        super(DiscretizedLogistic, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        k = torch.round(value * LEVELS)  # the level; a value within tolerance counts as it
        inv_scale = torch.exp(-self.log_scale)
        # the bin's edges y +- h = (2k - 255 +- 1) / 255: one rounding each (mu = 0 is an edge)
        plus = ((2 * k - (LEVELS - 1)) / LEVELS - self.loc) * inv_scale
        minus = ((2 * k - (LEVELS + 1)) / LEVELS - self.loc) * inv_scale
        # (logsigmoid, not -softplus(-t): torch's softplus turns linear past t = 20, off by e^-t)
        log_below_top = F.logsigmoid(plus)  # log sigma(plus): all of x = 0's bin
        log_above_bottom = F.logsigmoid(-minus)  # log(1 - sigma(minus)): all of x = 1's bin
        log_width = torch.log(-torch.expm1(-(2 * HALF_BIN) * inv_scale))
        inner = log_below_top + log_above_bottom + log_width
        return torch.where(k <= 0, log_below_top, torch.where(k >= LEVELS, log_above_bottom, inner))

    def sample(self, sample_shape: torch.Size = NO_SHAPE) -> torch.Tensor:
        """A logistic drawn by its inverse CDF, y = mu + s logit(u), then rounded to its bin
        (the tails into the edge bins) and mapped to k / 255."""
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
            u = u.clamp(min=torch.finfo(u.dtype).tiny)  # torch.rand is in [0, 1)
            y = self.loc.expand(shape) + self.log_scale.exp().expand(shape) * torch.logit(u)
            k = torch.round((y + 1) * (LEVELS / 2)).clamp(0, LEVELS)
            return k / LEVELS

    @property
    def mean(self) -> torch.Tensor:
        """E[x] = (1/255) sum_{k=1..255} P(level >= k), P(level >= k) = sigma((mu - t_k) / s)
        with t_k = (2k - 256) / 255 the bottom of bin k: one pass per level, so the memory is
        that of the parameters."""
        inv_scale = torch.exp(-self.log_scale)
        total = torch.zeros_like(self.loc)
        for k in range(1, LEVELS + 1):
            total = total + torch.sigmoid((self.loc - (2 * k - LEVELS - 1) / LEVELS) * inv_scale)
        return total / LEVELS


@LIKELIHOODS.register("discretized-logistic")
class DiscretizedLogisticLikelihood(Likelihood):
    """The discretized logistic per pixel for 8-bit images (values k / 255): mu and log s from
    the decoder, log s floored at -7 as in PixelCNN++ (so log p(x|z) stays bounded)."""

    params_per_pixel = 2
    data_kind = EIGHT_BIT
    log_scale_floor = -7.0
    decoder_output = (
        "2 × data_dim values: mu_i on [-1, 1] (the pixel as 2x - 1), then log s_i (floored at -7)"
    )
    mean_output = "E[x_i] = sum_k (k / 255) P(level k), in [0, 1]; near (mu_i + 1) / 2, not it"

    def params(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log s): the first ``data_dim`` outputs, then the rest floored."""
        loc, log_scale = out[..., : self.data_dim], out[..., self.data_dim :]
        return loc, torch.clamp(log_scale, min=self.log_scale_floor)

    def forward(self, out: torch.Tensor, x: torch.Tensor | None = None) -> dist.TorchDistribution:
        return DiscretizedLogistic(*self.params(out)).to_event(1)

    def mean(self, out: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return DiscretizedLogistic(*self.params(out)).mean

    def check_data(self, x: torch.Tensor) -> None:
        super().check_data(x)
        off = ~eight_bit.check(x)
        if off.any():
            raise DataSupportError(
                f"discretized-logistic needs 8-bit levels k/255 in [0, 1] (k = 0..255) but "
                f"{int(off.sum())} values are not, e.g. {float(x[off][0]):.6g}: read 8-bit "
                "images as k/255 and leave them so (--binarize none)"
            )


def eight_bit_values(likelihood: object) -> int | None:
    """The values per image of a likelihood of 8-bit data (a probability mass over the 256
    levels, whose -log p reads as bits per dimension directly), else None."""
    if getattr(likelihood, "data_kind", None) != EIGHT_BIT:
        return None
    return int(likelihood.data_dim)
