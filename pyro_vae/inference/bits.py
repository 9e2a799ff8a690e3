"""Bits per dimension: a negative log-likelihood in nats per image, as bits per value, the
unit image-density models report on 8-bit data."""

from __future__ import annotations

import math

LOG_256 = math.log(256)  # nats in one 8-bit value's worth of uniform choice


def bits_per_dim(nats: float, dims: int, discrete: bool) -> float:
    """-log2 p(x) / D for an image of D values (``dims``), given ``nats`` = -log p(x) in nats
    (a -ELBO, an upper bound on it, gives an upper bound in bits/dim).

    ``discrete=True``: p is a probability mass over the 256 levels of each value (the
    discretized logistic), so -log p(x) is already a code length and
    bpd = nats / (D ln 2); no ln 256 term enters.

    ``discrete=False``: p is a density on the rescaled values in [0, 1] (gaussian, beta, ...
    on uniformly dequantized data, the level k read as (k + u) / 256, u ~ U[0, 1)). Its
    comparable number is that of the density on [0, 256)^D, whose -log is larger by the
    change of variables' D ln 256: bpd = (nats + D ln 256) / (D ln 2), i.e. 8 bits per value
    more. (A density on k / 255 without dequantization has no such bound: its bits/dim
    are not comparable and are not reported.)
    """
    if dims < 1:
        raise ValueError(f"bits per dimension need dims >= 1, got {dims}")
    offset = 0.0 if discrete else dims * LOG_256
    return (nats + offset) / (dims * math.log(2))
