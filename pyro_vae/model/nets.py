"""Encoder and decoder networks.

Images travel as flat vectors of ``data_dim = prod(data_shape)`` values; the conv networks
reshape internally. An encoder maps x to the parameters (loc, scale) of the diagonal Gaussian
q(z|x); a decoder maps z to ``out_per_pixel * data_dim`` numbers that a likelihood interprets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Registry

# Smallest posterior scale: keeps log q(z|x) finite when the encoder saturates.
MIN_SCALE = 1e-5


class NetworkShapeError(ValueError):
    """The data's shape does not fit the chosen network."""


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class GaussianHead(nn.Module):
    """Features -> (loc, scale) of a diagonal Gaussian; scale = softplus(.) + MIN_SCALE."""

    def __init__(self, n_in: int, z_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, 2 * z_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.linear(h).chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + MIN_SCALE


class MLPEncoder(nn.Module):
    """Encoders share one shape: ``features(x)`` (the body's output, ``feature_dim`` wide) and
    ``head(features) -> (loc, scale)``; guides that need more than (loc, scale) read the
    features (see :mod:`pyro_vae.model.guides`)."""

    def __init__(self, data_dim: int, z_dim: int, hidden: Sequence[int] = (400,)) -> None:
        super().__init__()
        self.body = nn.Sequential(_mlp([data_dim, *hidden]), nn.ReLU())
        self.head = GaussianHead(hidden[-1], z_dim)
        self.feature_dim = hidden[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.body(x))


class MLPDecoder(nn.Module):
    def __init__(
        self, z_dim: int, data_dim: int, hidden: Sequence[int] = (400,), out_per_pixel: int = 1
    ):
        super().__init__()
        self.net = _mlp([z_dim, *reversed(hidden), out_per_pixel * data_dim])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


# Sizes the conv networks take: (C, H, W) with C channels and sides in this range.
CONV_CHANNELS = (1, 4)
CONV_SIDES = (28, 64)
# Channels of the stride-2 stages, in the order they are used (two stages, or three for a
# smaller side of 48 or more); the last stage's map feeds a Linear layer of ``hidden`` units.
CONV_WIDTHS = (32, 64, 128)


def conv_image_shape(data_shape: Sequence[int]) -> tuple[int, int, int]:
    """``data_shape`` as (C, H, W) (an (H, W) shape has one channel), or
    :class:`NetworkShapeError` with one line saying which shapes the conv networks take."""
    shape = tuple(data_shape)
    full = (1, *shape) if len(shape) == 2 else shape
    (lo_c, hi_c), (lo, hi) = CONV_CHANNELS, CONV_SIDES
    if len(full) != 3 or not (lo_c <= full[0] <= hi_c and all(lo <= s <= hi for s in full[1:])):
        raise NetworkShapeError(
            f"the conv networks take (C, H, W) images with {lo_c} to {hi_c} channels and sides "
            f"of {lo} to {hi} pixels ({lo}x{lo} up to {hi}x{hi}), got data of shape {shape}; "
            "use --network mlp"
        )
    return full


def conv_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """The feature maps' (H, W), the image first: each stride-2 stage (kernel 4, padding 1)
    maps a side n to n // 2, and stages are added while the smaller side is 12 or more:
    28 -> 14 -> 7, 32 -> 16 -> 8, 45x33 -> 22x16 -> 11x8, 64 -> 32 -> 16 -> 8."""
    sizes = [(height, width)]
    while min(sizes[-1]) >= 12:
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    return sizes


class ConvEncoder(nn.Module):
    """Stride-2 convs (kernel 4, padding 1, ReLU) with 32, 64 (then 128) channels, flattened,
    Linear -> ``hidden`` (ReLU), Gaussian head; the stages are :func:`conv_sizes`.

    For (1, 28, 28): Conv 1->32->64 (28 -> 14 -> 7), Linear 3136 -> 256. For (3, 64, 64):
    Conv 3->32->64->128 (64 -> 32 -> 16 -> 8), Linear 8192 -> 256."""

    def __init__(self, z_dim: int, hidden: int = 256, shape: Sequence[int] = (1, 28, 28)) -> None:
        super().__init__()
        channels, height, width = conv_image_shape(shape)
        sizes = conv_sizes(height, width)
        widths = [channels, *CONV_WIDTHS[: len(sizes) - 1]]
        layers: list[nn.Module] = [nn.Unflatten(-1, (channels, height, width))]
        for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(n_in, n_out, 4, stride=2, padding=1), nn.ReLU()]
        h, w = sizes[-1]
        layers += [nn.Flatten(), nn.Linear(widths[-1] * h * w, hidden), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = GaussianHead(hidden, z_dim)
        self.feature_dim = hidden

    def features(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape = x.shape[:-1]
        return self.body(x.reshape(-1, x.shape[-1])).reshape(*batch_shape, -1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """The encoder mirrored: Linear z -> ``hidden`` -> the last feature map (ReLU), then
    stride-2 transposed convs (kernel 4, padding 1) back through the encoder's sizes to
    ``out_per_pixel * C`` channels at exactly (H, W).

    A transposed conv maps a side m to 2m + p, ``output_padding`` p in {0, 1}; the encoder took
    a side n to n // 2, so p = n % 2 restores an odd n exactly (45 -> 22 -> 45), with no crop or
    interpolation (the extra last row or column is reached by fewer kernel taps, nothing more).
    Even sides have p = 0, so (1, 28, 28) keeps ConvTranspose 64->32->1 (7 -> 14 -> 28).

    Output channel j * C + c holds the likelihood's j-th parameter for channel c, so the
    flattened output is [all first parameters over (C, H, W), then all second ones, ...]: the
    MLP decoder's layout, which the likelihoods split into blocks of ``data_dim``."""

    def __init__(
        self,
        z_dim: int,
        hidden: int = 256,
        out_per_pixel: int = 1,
        shape: Sequence[int] = (1, 28, 28),
    ) -> None:
        super().__init__()
        channels, height, width = conv_image_shape(shape)
        sizes = conv_sizes(height, width)
        widths = [out_per_pixel * channels, *CONV_WIDTHS[: len(sizes) - 1]]
        h, w = sizes[-1]
        layers: list[nn.Module] = [
            nn.Linear(z_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, widths[-1] * h * w),
            nn.ReLU(),
            nn.Unflatten(-1, (widths[-1], h, w)),
        ]
        for i in range(len(sizes) - 1, 0, -1):
            (big_h, big_w), n_in, n_out = sizes[i - 1], widths[i], widths[i - 1]
            pad = (big_h % 2, big_w % 2)
            layers.append(
                nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1, output_padding=pad)
            )
            if i > 1:
                layers.append(nn.ReLU())
        layers.append(nn.Flatten())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # ConvTranspose wants one batch dim: fold any particle dims in and out again
        batch_shape = z.shape[:-1]
        out = self.net(z.reshape(-1, z.shape[-1]))
        return out.reshape(*batch_shape, -1)


class LogInputEncoder(nn.Module):
    """An encoder that reads log(1 + x): count data span orders of magnitude."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_dim = encoder.feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.features(torch.log1p(x))

    def head(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.head(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(torch.log1p(x))


# A network family builds (encoder, decoder) from facts the model builder knows (the data's
# shape, z_dim, the likelihood's outputs per pixel, the width of a context) and the
# keyword-only options a user chooses.
NETWORKS: Registry[tuple[nn.Module, nn.Module]] = Registry("network")


@NETWORKS.register("mlp")
def mlp_networks(
    data_shape: Sequence[int],
    z_dim: int,
    out_per_pixel: int = 1,
    context_dim: int = 0,
    *,
    hidden: Sequence[int] = (400,),
) -> tuple[nn.Module, nn.Module]:
    """Fully connected encoder and decoder; the decoder mirrors the hidden sizes. A context of
    ``context_dim`` values (a conditional VAE) is appended to the encoder's input and to the
    decoder's code."""
    if not hidden:
        raise ValueError("mlp needs at least one hidden layer")
    data_dim = math.prod(data_shape)
    return (
        MLPEncoder(data_dim + context_dim, z_dim, hidden),
        MLPDecoder(z_dim + context_dim, data_dim, hidden, out_per_pixel),
    )


@NETWORKS.register("conv")
def conv_networks(
    data_shape: Sequence[int], z_dim: int, out_per_pixel: int = 1
) -> tuple[nn.Module, nn.Module]:
    """The convolutional pair for (C, H, W) images, 1 to 4 channels, sides of 28 to 64 pixels
    (an (H, W) shape is one channel); :class:`ConvEncoder` says how many stages a size gets."""
    shape = conv_image_shape(data_shape)
    return (
        ConvEncoder(z_dim, shape=shape),
        ConvDecoder(z_dim, out_per_pixel=out_per_pixel, shape=shape),
    )
