"""Images of two or four channels are drawn (the first channel; RGBA's colour), in the figures
and in TensorBoard, instead of a traceback after the first epoch."""

from __future__ import annotations

import numpy as np
import torch

from pyro_vae.cli import main
from pyro_vae.report.plots import shown_channels


def test_the_channels_a_picture_shows():
    x = torch.arange(5 * 4 * 2 * 2, dtype=torch.float32).reshape(5, 4, 2, 2)
    assert torch.equal(shown_channels(x), x[:, :3])
    assert torch.equal(shown_channels(x[:, :2]), x[:, :1])
    assert torch.equal(shown_channels(x[:, :3]), x[:, :3])
    assert torch.equal(shown_channels(x[:, :1]), x[:, :1])


def test_rgba_images_train_with_figures_and_tensorboard(tmp_path):
    path = tmp_path / "rgba.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (120, 28, 28, 4), dtype=np.uint8))
    out = tmp_path / "run"
    argv = ["train", "--data", str(path), "--network", "conv", "--likelihood", "gaussian",
            "--binarize", "none", "--epochs", "1", "--batch-size", "60", "--z-dim", "2",
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert (out / "figures" / "reconstructions.png").is_file()
    assert any((out / "tensorboard").iterdir())
