"""Figures for a run: loss curves, reconstructions beside their inputs, samples from the prior."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..training.atomic_files import atomic_write


class _Pyplot:
    """``matplotlib.pyplot`` (on the Agg backend: files only, no display), imported on first
    use: a command that draws nothing does not wait for it."""

    def __getattr__(self, name: str) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot

        return getattr(matplotlib.pyplot, name)


plt = _Pyplot()


def _save(fig: plt.Figure, path: Path) -> plt.Figure:
    """Write the PNG atomically (a kill mid-write leaves the old file or none, never half).
    The figure is closed (pyplot forgets it) and returned: what it shows can still be read."""
    try:
        atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)
    return fig


def _whole_ticks(axis: Any) -> None:
    """Ticks at whole numbers only (epochs, dimension indices: no tick at epoch 1.5), even
    where the axis spans a single one (a one-epoch run)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def z_label(value: float) -> str:
    """A z value as the figures label it: two decimals, no "-0.00"."""
    return f"{round(float(value), 2) + 0.0:.2f}"


PAD = 2  # pixels between the cells of an image grid, and around it


def shown_channels(images: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) as a picture shows them: grey and RGB as they are, the first
    channel of two, the colour of RGBA (its first three)."""
    channels = images.shape[1]
    return images[:, :1] if channels == 2 else images[:, :3] if channels > 3 else images


def _grid(images: torch.Tensor, shape: Sequence[int], nrow: int) -> np.ndarray:
    images = shown_channels(images.detach().float().cpu().clamp(0, 1).reshape(-1, *shape))
    # imported here: torchvision's import pulls in torch._dynamo (seconds), which a command
    # that draws nothing should not wait for
    from torchvision.utils import make_grid

    return make_grid(images, nrow=nrow, padding=PAD, pad_value=1.0).permute(1, 2, 0).numpy()


def cell_centres(n: int, size: int) -> list[float]:
    """Where the centres of ``n`` cells of ``size`` pixels lie along an axis of an image grid
    (imshow's coordinates: pixel i spans [i - 0.5, i + 0.5])."""
    return [PAD + i * (size + PAD) + (size - 1) / 2 for i in range(n)]


def loss_curves(rows: list[dict[str, float]], path: Path, title: str = "") -> plt.Figure:
    """Three panels: -ELBO (train objective, train and test bound), the reconstruction term
    (distortion) and the KL term (rate), train and test, per image."""
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))

    marker = "o" if len(rows) <= 20 else ""  # a short run's points (one epoch: no line at all)

    def curve(ax, key: str, label: str, style: str = "-") -> None:
        if all(key in r for r in rows):
            ax.plot(epochs, [r[key] for r in rows], style, marker=marker, ms=3, label=label)

    curve(axes[0], "train_loss", "train objective (as optimised)", ":")
    for split in ("train", "test"):
        curve(axes[0], f"{split}_neg_elbo", f"{split} -ELBO")
        curve(axes[1], f"{split}_distortion", f"{split}")
        curve(axes[2], f"{split}_rate", f"{split}")
    for ax, name in zip(
        axes, ["-ELBO", "distortion  -E_q log p(x|z)", "rate  KL(q(z|x) || p(z))"], strict=True
    ):
        ax.set(xlabel="epoch", ylabel="nats per image", title=name)
        _whole_ticks(ax.xaxis)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def reconstructions(
    inputs: torch.Tensor, recons: torch.Tensor, shape: Sequence[int], path: Path, per_row: int = 10
) -> plt.Figure:
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
    return _save(fig, path)


def feature_heatmaps(panels: dict[str, torch.Tensor], path: Path, title: str = "") -> plt.Figure:
    """Data that are not images (count vectors, feature tables): one heatmap per panel, a row
    per example and a column per feature, on a log(1 + x) scale where values exceed 1."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (name, values) in zip(axes[0], panels.items(), strict=True):
        v = values.detach().float().cpu()
        log_scale = bool(v.min() >= 0 and v.max() > 1)
        shown = torch.log1p(v) if log_scale else v
        im = ax.imshow(shown.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set(xlabel="feature", ylabel="example", title=name + (" (log 1+x)" if log_scale else ""))
        fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def samples(
    images: torch.Tensor,
    shape: Sequence[int],
    path: Path,
    per_row: int = 10,
    title: str = "samples: E[x | z], z ~ p(z)",
) -> plt.Figure:
    """A grid of E[x | z] for z drawn from the prior: every image, the last row as full as
    it comes (blank cells after it)."""
    rows = -(-images.shape[0] // per_row)
    fig, ax = plt.subplots(figsize=(per_row * 0.7, rows * 0.7 + 0.5))
    ax.imshow(_grid(images, shape, per_row), cmap="gray")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _project_2d(codes: torch.Tensor) -> tuple[torch.Tensor, tuple[str, str]]:
    """2-D codes as they are; more dimensions by PCA (the top two principal components)."""
    codes = codes.detach().double().cpu()
    if codes.shape[1] == 1:
        return torch.cat([codes, torch.zeros_like(codes)], 1), ("z1", "")
    if codes.shape[1] == 2:
        return codes, ("z1", "z2")
    centred = codes - codes.mean(0)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    share = (s**2 / (s**2).sum()).tolist()
    return centred @ v[:2].T, (
        f"PC1 ({share[0]:.0%} of variance)",
        f"PC2 ({share[1]:.0%} of variance)",
    )


def latent_map(
    codes: torch.Tensor, labels: torch.Tensor, path: Path, title: str = ""
) -> plt.Figure:
    """Posterior means E_q[z|x] of test images, coloured by class (PCA beyond two dims)."""
    xy, (xlabel, ylabel) = _project_2d(codes)
    labels = labels.detach().cpu()
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10")
    for c in sorted(set(labels.tolist())):
        pick = labels == c
        ax.scatter(xy[pick, 0], xy[pick, 1], s=6, alpha=0.7, color=cmap(c % 10), label=str(c))
    ax.set(
        xlabel=xlabel, ylabel=ylabel, title=title or "latent map: E_q[z|x] of test images, by label"
    )
    ax.legend(markerscale=3, fontsize=8, loc="best", title="label")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


FRAME = "tab:orange"  # the colour that marks framed columns and their labels


def image_grid(
    images: torch.Tensor,
    shape: Sequence[int],
    rows: int,
    path: Path,
    title: str,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    xlabel: str = "",
    ylabel: str = "",
    framed: Sequence[int] = (),
) -> plt.Figure:
    """Images (rows * cols, D) laid out row by row; optional labels of the rows (left) and of
    the columns (below), axis labels, and a frame around the columns ``framed`` (their labels
    in the frame's colour)."""
    cols = images.shape[0] // rows
    height = rows * 0.6 + 0.6 + (0.45 if col_labels else 0) + (0.25 if xlabel else 0)
    fig, ax = plt.subplots(figsize=(cols * 0.6 + 1.0 + (0.5 if ylabel else 0), height))
    ax.imshow(_grid(images[: rows * cols], shape, cols), cmap="gray")
    h, w = shape[-2], shape[-1]
    ax.set_yticks(cell_centres(rows, h) if row_labels else [], row_labels or [], fontsize=7)
    ax.set_xticks(cell_centres(cols, w) if col_labels else [], col_labels or [], fontsize=7)
    ax.tick_params(length=0)
    for c in framed:
        x0 = c * (w + PAD) + 0.5  # the padding on either side of the column
        ax.add_patch(
            plt.Rectangle(
                (x0, 0.5), w + PAD, rows * (h + PAD), fill=False, edgecolor=FRAME, linewidth=2
            )
        )
        if col_labels:
            ax.get_xticklabels()[c].set_color(FRAME)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def image_rows(
    images: torch.Tensor,
    shape: Sequence[int],
    path: Path,
    title: str,
    row_labels: Sequence[str],
    col_labels: Sequence[Sequence[str]],
    xlabel: str = "",
) -> plt.Figure:
    """Rows of images, each in its own panel with its own column labels below it (rows whose
    columns mean different values: a traversal of each latent dimension over its own range).
    ``images``: (rows * cols, D), row by row; ``col_labels[r]``: the labels of row r."""
    rows = len(row_labels)
    cols = images.shape[0] // rows
    h, w = shape[-2], shape[-1]
    fig, axes = plt.subplots(rows, 1, figsize=(cols * 0.6 + 1.0, rows * 0.85 + 0.9), squeeze=False)
    for r, ax in enumerate(axes[:, 0]):
        ax.imshow(_grid(images[r * cols : (r + 1) * cols], shape, cols), cmap="gray")
        ax.set_yticks(cell_centres(1, h), [row_labels[r]], fontsize=8)
        ax.set_xticks(cell_centres(cols, w), col_labels[r], fontsize=6)
        ax.tick_params(length=0, pad=1)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if xlabel:
        axes[-1, 0].set_xlabel(xlabel, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def kl_per_dimension(
    kl: torch.Tensor | None, activity: torch.Tensor, threshold: float, path: Path
) -> plt.Figure:
    """KL(q(z_j|x) || p(z_j)) per dimension (when it factorises) and Cov_x E[z_j|x], with the
    active units (activity > threshold, Burda et al. 2016) marked."""
    activity = activity.detach().cpu()
    active = activity > threshold
    dims = range(1, len(activity) + 1)  # z1 ... zD, as the other figures number them
    colours = ["tab:blue" if a else "lightgray" for a in active.tolist()]
    panels = 2 if kl is not None else 1
    fig, axes = plt.subplots(
        panels, 1, figsize=(max(6, 0.25 * len(activity) + 2), 3 * panels), squeeze=False
    )
    ax = axes[0][0]
    ax.bar(dims, activity.tolist(), color=colours)
    ax.axhline(threshold, color="tab:red", lw=1, ls="--", label=f"threshold {threshold}")
    ax.set_yscale("log")
    ax.set(
        ylabel="Cov_x E[z_j | x]",
        xlabel="latent dimension j",
        title=f"activity: {int(active.sum())} of {len(activity)} units active",
    )
    _whole_ticks(ax.xaxis)
    ax.legend(fontsize=8)
    if kl is not None:
        ax = axes[1][0]
        ax.bar(dims, kl.detach().cpu().tolist(), color=colours)
        ax.set(
            ylabel="nats",
            xlabel="latent dimension j",
            title=f"KL(q(z_j|x) || p(z_j)), mean over test images; total {float(kl.sum()):.2f}",
        )
        _whole_ticks(ax.xaxis)
    fig.tight_layout()
    return _save(fig, path)


def rate_distortion(rows: list[dict], path: Path, title: str) -> plt.Figure:
    """Distortion against rate, one point per beta, with the -ELBO = D + R isolines."""
    fig, ax = plt.subplots(figsize=(6.5, 5))
    rate = [r["rate"] for r in rows]
    distortion = [r["distortion"] for r in rows]
    ax.plot(rate, distortion, "o-", color="tab:blue")
    for r in rows:
        ax.annotate(
            f"beta={r['beta']:g}",
            (r["rate"], r["distortion"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    best = min(r["neg_elbo"] for r in rows)
    lo, hi = min(rate), max(rate)
    for level in (best, best + 10, best + 30):
        ax.plot([lo, hi], [level - lo, level - hi], ":", color="gray", lw=0.8)
    ax.set(
        xlabel="rate  KL(q(z|x) || p(z))  (nats)",
        ylabel="distortion  -E_q log p(x|z)  (nats)",
        title=title,
    )
    ax.text(
        0.98,
        0.98,
        "dotted: -ELBO = D + R isolines",
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=8,
        color="gray",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def side_by_side(
    groups: dict[str, torch.Tensor], shape: Sequence[int], path: Path, title: str, per_row: int = 10
) -> plt.Figure:
    """One image grid per named group, side by side."""
    fig, axes = plt.subplots(1, len(groups), figsize=(len(groups) * per_row * 0.55, 4.2))
    for ax, (name, images) in zip(axes, groups.items(), strict=True):
        rows = images.shape[0] // per_row
        ax.imshow(_grid(images[: rows * per_row], shape, per_row), cmap="gray")
        ax.set_axis_off()
        ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def activity_profiles(
    rows: list[dict], path: Path, title: str, threshold: float = 0.01
) -> plt.Figure:
    """Per setting, the sorted activity Cov_x E[z_j|x] of its latent dimensions."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r in rows:
        activity = sorted(r["activity"], reverse=True)
        ax.plot(
            range(1, len(activity) + 1),
            activity,
            "o-",
            ms=3,
            label=f"{r['setting']} ({r['active_units']} active)",
        )
    ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"threshold {threshold}")
    ax.set_yscale("log")
    ax.set(xlabel="latent dimensions, most active first", ylabel="Cov_x E[z_j | x]", title=title)
    _whole_ticks(ax.xaxis)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
