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


CONV_SHAPE = (1, 28, 28)


class ConvEncoder(nn.Module):
    """Conv 1->32->64 (kernel 4, stride 2: 28 -> 14 -> 7), Linear 3136 -> 256, Gaussian head."""

    def __init__(self, z_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Unflatten(-1, CONV_SHAPE),
            nn.Conv2d(1, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, hidden),
            nn.ReLU(),
        )
        self.head = GaussianHead(hidden, z_dim)
        self.feature_dim = hidden

    def features(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape = x.shape[:-1]
        return self.body(x.reshape(-1, x.shape[-1])).reshape(*batch_shape, -1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """The encoder mirrored: Linear z -> 256 -> 3136, ConvTranspose 64->32->out (7 -> 14 -> 28)."""

    def __init__(self, z_dim: int, hidden: int = 256, out_per_pixel: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(z_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 64 * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(-1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, out_per_pixel, 4, stride=2, padding=1),
            nn.Flatten(),
        )

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
    """The convolutional pair for 28x28 single-channel images."""
    if tuple(data_shape) not in (CONV_SHAPE, CONV_SHAPE[1:]):
        raise NetworkShapeError(
            f"the conv networks take 28x28 single-channel images, got data of shape "
            f"{tuple(data_shape)}; use --network mlp"
        )
    return ConvEncoder(z_dim), ConvDecoder(z_dim, out_per_pixel=out_per_pixel)
