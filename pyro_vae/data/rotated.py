"""Rotated images: a known rotation per image, for models that infer pose (spatial-VAE,
Bepler et al., 2019, "Explicitly disentangling image content from translation and rotation
with spatial-VAE", NeurIPS).

Coordinates. An H x W image is a function on the square [-1, 1]^2: x runs along the columns
(left -1 to right +1), y along the rows (top -1 to bottom +1), and the pixel centres sit on
``linspace(-1, 1, n)`` in each direction (``align_corners=True``: the corner pixels' centres
are the square's corners). Rotating an image by the angle a means

    x_rot(c) = x(R(a) c),   R(a) = [[cos a, -sin a], [sin a, cos a]],

read off by bilinear interpolation, zero outside the square. With rows running downwards,
a > 0 turns the picture counter-clockwise as displayed: a = pi/2 is ``torch.rot90(k=1)`` over
(H, W). The invariant VAE (:mod:`pyro_vae.model.invariant`) renders its images at the same
transformed coordinates, so an image rotated here by a is its canonical image at pose theta = a.

``rotated_mnist_sample`` rotates every image of ``mnist-sample`` by its own angle, drawn
uniformly from [-max_angle, max_angle] by a generator seeded with ``seed``: the same seed gives
the same data, and the angles are kept (``train_angles``, ``test_angles``) to compare with the
poses a model infers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .datasets import DATASETS, IMAGE_SHAPE, DataError, ImageData, mnist_sample

# pixel centres on linspace(-1, 1, n): the convention of the invariant VAE's coordinate grid
ALIGN_CORNERS = True


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """R(a) = [[cos a, -sin a], [sin a, cos a]] for each angle: shape (*angles.shape, 2, 2)."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def rotate_images(
    x: torch.Tensor,
    angles: torch.Tensor | float,
    shape: Sequence[int] = IMAGE_SHAPE,
) -> torch.Tensor:
    """Flat images ``x`` (N, C*H*W) rotated by ``angles`` (radians; one per image, or one for
    all): x_rot(c) = x(R(a) c), bilinear, zeros outside. a > 0 is counter-clockwise as
    displayed (rows top to bottom); see the module doc. Images must be square, or a rotation in
    the normalised coordinates would shear them."""
    c, h, w = (1, *shape) if len(shape) == 2 else tuple(shape)
    if h != w:
        raise ValueError(f"rotate_images takes square images, got shape {tuple(shape)}")
    if x.dim() != 2 or x.shape[1] != c * h * w:
        raise ValueError(f"x must have shape (N, {c * h * w}), got {tuple(x.shape)}")
    n = x.shape[0]
    angles = torch.as_tensor(angles, dtype=x.dtype, device=x.device)
    if angles.dim() == 0:
        angles = angles.expand(n)
    if angles.shape != (n,):
        raise ValueError(f"give one angle, or one per image ({n}), got {tuple(angles.shape)}")
    affine = torch.cat([rotation_matrices(angles), x.new_zeros(n, 2, 1)], -1)  # (N, 2, 3)
    images = x.reshape(n, c, h, w)
    grid = F.affine_grid(affine, list(images.shape), align_corners=ALIGN_CORNERS)
    rotated = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="zeros", align_corners=ALIGN_CORNERS
    )
    return rotated.reshape(n, -1)


@dataclass
class RotatedData:
    """Rotated images (``data``, labels kept) and the angle, in radians, each was rotated by
    (:func:`rotate_images`); angles are uniform on [-max_angle, max_angle]."""

    data: ImageData
    train_angles: torch.Tensor
    test_angles: torch.Tensor
    max_angle: float


def _uniform_angles(n: int, max_angle: float, generator: torch.Generator) -> torch.Tensor:
    return (2 * torch.rand(n, generator=generator) - 1) * max_angle


def rotated_mnist_sample(seed: int = 0, max_angle: float = math.pi) -> RotatedData:
    """``mnist-sample`` (4,000 / 1,000 digits) with every image rotated by its own angle
    a ~ U[-max_angle, max_angle], drawn by a ``torch.Generator`` seeded with ``seed`` (train
    angles first, then test); pixels stay in [0, 1] (bilinear weights are convex)."""
    if not (math.isfinite(max_angle) and max_angle >= 0):
        raise DataError(f"max_angle must be a finite angle >= 0 (radians), got {max_angle}")
    base = mnist_sample()
    generator = torch.Generator().manual_seed(seed)
    train_angles = _uniform_angles(base.train_x.shape[0], max_angle, generator)
    test_angles = _uniform_angles(base.test_x.shape[0], max_angle, generator)
    rotated = ImageData(
        rotate_images(base.train_x, train_angles, base.shape).clamp(0, 1),
        base.train_y,
        rotate_images(base.test_x, test_angles, base.shape).clamp(0, 1),
        base.test_y,
        shape=base.shape,
        name="mnist-rotated",
    )
    return RotatedData(rotated, train_angles, test_angles, float(max_angle))


@DATASETS.register("mnist-rotated")
def mnist_rotated() -> ImageData:
    """The images of :func:`rotated_mnist_sample` with its defaults (seed 0, angles in
    [-pi, pi]): the form a dataset registry entry returns."""
    return rotated_mnist_sample().data
