"""The invariant VAE's search over rotations: R candidate angles, summed out exactly.

An MLP inference network reads the angle of a digit turned anywhere on the circle poorly: the
posterior over theta has a mode per plausible orientation and a Gaussian q(theta | x) takes one,
so training settles with q(theta | x) at one angle for every image and z holding the pose
(spatial-VAE's inference network; Nasiri & Bepler, 2022, "Unsupervised object representation
learning using translation and rotation group equivariant VAE", NeurIPS, TARGET-VAE, who fix
it with a discrete rotation inferred by an equivariant encoder). Here the angle is a
discrete choice among R plus a small offset:

    r ~ Cat(1/R),  phi_r = 2 pi r / R                 (site "r")
    theta ~ N(0, theta_prior^2),  theta_prior = pi/R  (site "theta": the offset from phi_r)
    c'_i = R(phi_r + theta) c_i + dx

and the guide reads each of the R copies of the image turned back by phi_r,
x^(r)(c) = x(R(-phi_r) c) (:func:`pyro_vae.data.rotated.rotate_images` by -phi_r), with one
network g:

    q(r | x) = softmax_r(g_logit(x^(r))),   q(z, theta, dx | x, r) from g(x^(r)).

Turning the image by a multiple of 2 pi / R permutes the copies, so q(r | x) turns with it (up
to the interpolation of the turned-back copies), and the content code reads the image at its
most upright turn. r is enumerated in parallel (``TraceEnum_ELBO``): the R turns are one more
batch dimension, the decoder runs once on all of them, and the bound sums them exactly,

    ELBO(x) = sum_r q(r|x) [ E_q(.|x,r) log p(x | r, z, theta, dx) - beta KL(q(z,theta,dx|x,r)
              || p(z,theta,dx)) ] - beta KL(q(r|x) || Cat(1/R)),

the multi-start over rotations that a single Gaussian angle lacks, without a Python loop.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data.rotated import rotate_images


def candidate_angles(rotations: int) -> torch.Tensor:
    """phi_r = 2 pi r / R, r = 0..R-1 (float64 values, stored as the model's dtype)."""
    return torch.arange(rotations, dtype=torch.float64) * (2 * math.pi / rotations)


class RotationSearchEncoder(nn.Module):
    """x -> (logits (N, R) of q(r|x), loc (R, N, d), scale (R, N, d)): ``encoder`` (an encoder
    with ``features`` and ``head``) on each of the R turned-back copies of the image, and one
    linear unit of its features for the logit."""

    def __init__(self, encoder: nn.Module, rotations: int, side: int) -> None:
        super().__init__()
        if rotations < 2:
            raise ValueError(f"a search over rotations needs at least 2, got {rotations}")
        self.encoder = encoder
        self.side = side
        self.logit = nn.Linear(encoder.feature_dim, 1)
        self.rotations = rotations

    def angles(self, like: torch.Tensor) -> torch.Tensor:
        """phi_r in ``like``'s dtype and device (computed in float64, then rounded once)."""
        return candidate_angles(self.rotations).to(like.device, like.dtype)

    def turned_back(self, x: torch.Tensor) -> torch.Tensor:
        """The R copies x^(r), shape (R, N, pixels): one ``grid_sample`` for all of them."""
        n, r = x.shape[0], self.rotations
        angles = -self.angles(x).repeat_interleave(n)
        copies = rotate_images(x.repeat(r, 1), angles, (1, self.side, self.side))
        return copies.reshape(r, n, -1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.encoder.features(self.turned_back(x))
        loc, scale = self.encoder.head(h)
        return self.logit(h)[..., 0].transpose(0, 1), loc, scale


def rows_at(t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The rows of ``t`` (R, N, ...) at each image's rotation r: r of shape (N,) (drawn), or
    any shape that broadcasts against (N,) (enumerated: (R, 1)); shape (*r's batch, N, ...)."""
    index = r.expand(*r.shape[:-1], t.shape[1])
    return t[index, torch.arange(t.shape[1], device=t.device)]


def at_rotation(
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]], r: torch.Tensor
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each site's (loc, scale), one row per turn, at the turns ``r`` (:func:`rows_at`)."""
    return {site: (rows_at(loc, r), rows_at(scale, r)) for site, (loc, scale) in parts.items()}


def wrapped(angle: torch.Tensor) -> torch.Tensor:
    """An angle in [-pi, pi)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi
