"""Schedules: a value raised linearly over the first steps of training, the one mechanism
behind KL warm-up (beta) and capacity annealing (C),

    value_t = target * min(1, t / steps),   value_0 = 0;   steps = 0: value_t = target,

and a value lowered geometrically (the relaxed class site's temperature).

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


@dataclass(frozen=True)
class GeometricRamp:
    """``start * (end / start) ** min(1, step / steps)``: from ``start`` down (or up) to
    ``end`` by a constant factor per step, then ``end``; ``end`` throughout if steps = 0. For a
    temperature this is Jang et al.'s (2017) tau_t = max(floor, tau_0 exp(-r t)) with
    r = log(tau_0 / floor) / steps."""

    start: float
    end: float
    steps: int = 0

    def __post_init__(self) -> None:
        if not (self.start > 0 and self.end > 0):
            raise ValueError(f"a geometric schedule runs between positive values, got "
                             f"{self.start} and {self.end}")  # fmt: skip
        if self.steps < 0:
            raise ValueError(f"a schedule's steps must be >= 0, got {self.steps}")

    def __call__(self, step: int) -> float:
        if self.steps == 0 or step >= self.steps:
            return self.end
        return self.start * (self.end / self.start) ** (step / self.steps)
