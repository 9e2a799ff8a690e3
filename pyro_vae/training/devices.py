"""Which device a run uses, and waiting for it."""

from __future__ import annotations

import os

import torch


class DeviceError(ValueError):
    """A device that was asked for but is not there."""


def resolve_device(name: str) -> torch.device:
    """``auto``: a CUDA GPU when there is one, else the CPU; under ``torchrun`` on CUDA, this
    process's own GPU (``cuda:LOCAL_RANK``)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    elif name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but no CUDA GPU is available")
    device = torch.device(name)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that timings are true."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
