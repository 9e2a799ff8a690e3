"""Where a run is, and the random-number state that a checkpoint must restore."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Position:
    """``batch`` batches of epoch ``epoch + 1`` done, ``step`` steps in all."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    epoch_loss: float = 0.0  # sum of the batch losses so far in this epoch
    epoch_seconds: float = 0.0
    # generator states at the start of epoch ``epoch + 1``: replaying them redraws that epoch's
    # binarized images and batch order exactly
    epoch_rng: dict[str, torch.Tensor] = field(default_factory=dict)

    def where(self) -> str:
        """'step S (epoch E, batch B)', for messages."""
        return f"step {self.step} (epoch {self.epoch + 1}, batch {self.batch})"


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global random streams this process draws its noise from."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
