"""Schedules: a value raised linearly over the first steps of training, the one mechanism
behind KL warm-up (beta) and capacity annealing (C).

    value_t = target * min(1, t / steps),   value_0 = 0;   steps = 0: value_t = target.

The trainer applies each schedule before every step (``pyro_vae.training.assemble``); in a
hand-written SVI loop, set the value yourself: ``vae.beta = warmup(step)``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinearRamp:
    """``target * min(1, step / steps)`` at step ``step``; the target throughout if steps = 0."""

    target: float
    steps: int = 0

    def __post_init__(self) -> None:
        if self.target < 0:
            raise ValueError(f"a schedule's target must be >= 0, got {self.target}")
        if self.steps < 0:
            raise ValueError(f"a schedule's steps must be >= 0, got {self.steps}")

    def __call__(self, step: int) -> float:
        if self.steps == 0 or step >= self.steps:
            return self.target
        return self.target * step / self.steps


def KLWarmup(beta: float = 1.0, warmup_steps: int = 0) -> LinearRamp:  # noqa: N802 (a ramp)
    """Linear KL warm-up (Bowman et al., 2016; Sønderby et al., 2016):
    beta_t = beta * min(1, t / warmup_steps), starting from beta_0 = 0 at step 0."""
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    return LinearRamp(beta, warmup_steps)
