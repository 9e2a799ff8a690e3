"""Figures for a run: loss curves, reconstructions beside their inputs, samples from the prior."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402


def _grid(images: torch.Tensor, shape: Sequence[int], nrow: int) -> np.ndarray:
    images = images.detach().float().cpu().clamp(0, 1).reshape(-1, *shape)
    return make_grid(images, nrow=nrow, padding=2, pad_value=1.0).permute(1, 2, 0).numpy()


def loss_curves(rows: list[dict[str, float]], path: Path, title: str = "") -> None:
    """-ELBO per image (train objective, train and test bound), and the test rate/distortion."""
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_terms) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label, style in [
        ("train_loss", "train objective (beta-weighted)", ":"),
        ("train_neg_elbo", "train -ELBO", "-"),
        ("test_neg_elbo", "test -ELBO", "-"),
    ]:
        if all(key in r for r in rows):
            ax_loss.plot(epochs, [r[key] for r in rows], style, label=label)
    ax_loss.set(xlabel="epoch", ylabel="nats per image", title="loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_terms.plot(epochs, [r["test_distortion"] for r in rows], label="distortion -E log p(x|z)")
    ax_terms.set(xlabel="epoch", ylabel="distortion (nats)", title="test: distortion and rate")
    ax_rate = ax_terms.twinx()
    ax_rate.plot(epochs, [r["test_rate"] for r in rows], color="tab:red", label="rate KL(q||p)")
    ax_rate.set_ylabel("rate (nats)", color="tab:red")
    lines = ax_terms.get_lines() + ax_rate.get_lines()
    ax_terms.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    ax_terms.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reconstructions(
    inputs: torch.Tensor, recons: torch.Tensor, shape: Sequence[int], path: Path, per_row: int = 10
) -> None:
    """Rows alternate: inputs, then their reconstructions E[x | z = loc(x)]."""
    n = inputs.shape[0] - inputs.shape[0] % per_row
    pairs = torch.stack(
        [
            inputs[:n].reshape(-1, per_row, inputs.shape[-1]),
            recons[:n].reshape(-1, per_row, recons.shape[-1]),
        ],
        dim=1,
    ).reshape(-1, inputs.shape[-1])
    fig, ax = plt.subplots(figsize=(per_row * 0.7, n // per_row * 1.4 + 0.5))
    ax.imshow(_grid(pairs, shape, per_row), cmap="gray")
    ax.set_axis_off()
    ax.set_title("test inputs (odd rows) and reconstructions (even rows)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def samples(images: torch.Tensor, shape: Sequence[int], path: Path, per_row: int = 10) -> None:
    """A grid of E[x | z] for z drawn from the prior."""
    rows = images.shape[0] // per_row
    fig, ax = plt.subplots(figsize=(per_row * 0.7, rows * 0.7 + 0.5))
    ax.imshow(_grid(images[: rows * per_row], shape, per_row), cmap="gray")
    ax.set_axis_off()
    ax.set_title("samples: E[x | z], z ~ p(z)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
