"""The tiny run the trainer's tests share: 2 epochs of an MLP 784-32-3, batches of 64, on the
``small_data`` fixture (conftest.py), written to DIRECTORY/run, quietly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyro_vae.training import TrainConfig


def tiny_config(directory: Path, **options: Any) -> TrainConfig:
    base = dict(epochs=2, batch_size=64, hidden=(32,), z_dim=3, out=str(directory / "run"))
    return TrainConfig(**(base | {"progress": False} | options))
