"""Hamiltonian Monte Carlo on a dict of latent tensors, vectorised over chains and images.

The state is z = {site: tensor of shape (C, N, *event)}: C chains for each of N images. One
transition leaves a density f(z) (known up to a constant, one per image) invariant (Neal,
2011, "MCMC using Hamiltonian dynamics", sec. 3.2, 5.4):

    p ~ N(0, I)                                       a fresh momentum per chain
    (z', p') = leapfrog(z, p), L steps of size e:     p <- p + e/2 grad log f(z)
                                                      z <- z + e p
                                                      p <- p + e/2 grad log f(z)
    accept z' with probability min(1, exp(H(z, p) - H(z', p'))),  H = -log f(z) + |p|^2 / 2

The step size e is one per image (shape (N,)), shared by that image's chains; the Metropolis
test is per chain, so the transition is exact for any e. A proposal whose density is NaN or
-inf (a leapfrog that diverged) is rejected. :func:`adapt_step_size` is the multiplicative
rule of Wu, Burda, Salakhutdinov & Grosse (2017, "On the quantitative analysis of
decoder-based generative models", sec. 3; their code: e <- 1.02 e above the target acceptance
rate, 0.98 e below it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

Latents = dict[str, torch.Tensor]
Nested = torch.Tensor | dict[str, "Nested"]


@dataclass(frozen=True)
class Point:
    """A state z with what the target knows there: log f(z) and grad log f(z) (the same keys and
    shapes as z), and ``extra`` (tensors, or dicts of them, whose leading dims are (C, N)),
    carried along with z when a proposal is accepted. ``log_density`` has shape (C, N)."""

    z: Latents
    log_density: torch.Tensor
    grad: Latents
    extra: dict[str, Nested] = field(default_factory=dict)


Target = Callable[[Latents], Point]


def per_image(step_size: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The per-image ``step_size`` (N,) shaped (1, N, 1, ...) to broadcast against ``like``."""
    return step_size.to(like.dtype).reshape(1, -1, *([1] * (like.dim() - 2)))


def kinetic_energy(momentum: Latents) -> torch.Tensor:
    """|p|^2 / 2 summed over every site's event dims: shape (C, N)."""
    return sum(p.pow(2).flatten(2).sum(-1) for p in momentum.values()) / 2


def leapfrog(
    point: Point, momentum: Latents, target: Target, step_size: torch.Tensor, steps: int
) -> tuple[Point, Latents]:
    """``steps`` leapfrog steps of size ``step_size`` (one per image) from (z, p): the end point
    (evaluated by ``target``) and momentum. Volume-preserving and reversible (Neal, 2011,
    sec. 2.3), which is what makes the Metropolis test below exact."""
    eps = {k: per_image(step_size, v) for k, v in point.z.items()}
    p = {k: momentum[k] + 0.5 * eps[k] * point.grad[k] for k in momentum}
    for i in range(steps):
        point = target({k: point.z[k] + eps[k] * p[k] for k in p})
        last = i == steps - 1
        p = {k: p[k] + (0.5 if last else 1.0) * eps[k] * point.grad[k] for k in p}
    return point, p


def select(accept: torch.Tensor, new: Nested, old: Nested) -> Nested:
    """``new`` where ``accept`` (C, N) is true, ``old`` elsewhere, through nested dicts."""
    if isinstance(new, dict):
        return {k: select(accept, new[k], old[k]) for k in new}
    mask = accept.reshape(*accept.shape, *([1] * (new.dim() - accept.dim())))
    return torch.where(mask, new, old)


def hmc_transition(
    point: Point, target: Target, step_size: torch.Tensor, leapfrog_steps: int
) -> tuple[Point, torch.Tensor]:
    """One HMC transition leaving ``target``'s density invariant, for every chain at once.

    ``point`` is the current state evaluated by ``target`` (its ``log_density`` and ``grad``
    must be those of the same density), ``step_size`` one per image (N,). Returns the new
    state and which chains accepted their proposal (bool, (C, N)).
    """
    momentum = {k: torch.randn_like(v) for k, v in point.z.items()}
    proposal, end_momentum = leapfrog(point, momentum, target, step_size, leapfrog_steps)
    log_ratio = (proposal.log_density - kinetic_energy(end_momentum)) - (
        point.log_density - kinetic_energy(momentum)
    )
    log_ratio = torch.nan_to_num(log_ratio, nan=-torch.inf, posinf=-torch.inf)
    accept = torch.rand_like(log_ratio).log() < log_ratio
    moved = Point(
        select(accept, proposal.z, point.z),
        torch.where(accept, proposal.log_density, point.log_density),
        select(accept, proposal.grad, point.grad),
        select(accept, proposal.extra, point.extra),
    )
    return moved, accept


STEP_SIZE_RANGE = (1e-4, 0.5)


def adapt_step_size(
    step_size: torch.Tensor,
    acceptance: torch.Tensor,
    target: float = 0.65,
    factor: float = 1.02,
    bounds: tuple[float, float] = STEP_SIZE_RANGE,
) -> torch.Tensor:
    """e <- e * ``factor`` where an image's acceptance rate (N,) is above ``target`` and
    e * (2 - ``factor``) where it is not (1.02 and 0.98, Wu et al., 2017), clamped to
    ``bounds`` (their code clamps to [1e-4, 0.5])."""
    up = acceptance > target
    scaled = torch.where(up, step_size * factor, step_size * (2 - factor))
    return scaled.clamp(*bounds)


def with_density(point: Point, log_density: torch.Tensor, grad: Latents) -> Point:
    """``point`` re-evaluated under another density known at the same z (no model call)."""
    return replace(point, log_density=log_density, grad=grad)
