"""invariance: does the invariant VAE keep the pose out of its content code? (Bepler et al.,
2019, "Explicitly disentangling image content from translation and rotation with
spatial-VAE")

    pyro-vae study invariance --out runs/invariance

Runs on ``mnist-rotated`` (each digit rotated by its own known angle, uniform in [-pi, pi]):
the invariant VAE (content z of ``--z-dim`` dimensions, an angle and a shift) once per value of
``--rotations`` (R turns searched, :mod:`pyro_vae.model.rotation_search`; 0: one Gaussian
angle, spatial-VAE's), and a plain VAE with as many latent dimensions in all (z-dim + 3).
Measured on the test digits:

- the circular correlation (Jammalamadaka & SenGupta, 2001) between the inferred angle (the
  posterior mean, at the most probable turn) and the applied rotation: 1 when the model reads
  the pose off the image;
- the same correlation of the doubled angles (2 theta against 2 a), which forgives a half turn:
  a 0, a 1 or an 8 is as well explained turned by pi, and a 6 turned by pi is a 9;
- the median angle error, after removing each digit class's own offset (a model may draw a
  class upright at any fixed angle of its choosing: its canonical frame), and the share of
  digits within 30 degrees of it (1/6 by chance);
- the accuracy of a simple classifier, 5 nearest neighbours fitted on the training digits'
  codes, on each model's codes: a content code free of the pose should classify the rotated
  digits better than a code that must also hold it.

Writes invariance.json, invariance.md and invariance.png (inferred against applied angle, a
panel per invariant run).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from ..data import Binarizer, rotated_mnist_sample
from ..model.rotation_search import wrapped
from ..report.plots import plt
from ..training import TrainConfig, load_run
from ..training.option_help import option_help
from .harness import at_least, chosen_options, study, train_or_reuse
from .tables import write_tables


def circular_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Jammalamadaka & SenGupta's correlation of two angles, in [-1, 1]:
    sum sin(a - mean a) sin(b - mean b) / sqrt(sum sin^2(a - mean a) sum sin^2(b - mean b)),
    with circular means mean a = atan2(sum sin a, sum cos a)."""
    a, b = a.double(), b.double()
    sa = torch.sin(a - torch.atan2(a.sin().sum(), a.cos().sum()))
    sb = torch.sin(b - torch.atan2(b.sin().sum(), b.cos().sum()))
    return float((sa * sb).sum() / torch.sqrt((sa**2).sum() * (sb**2).sum()))


def knn_accuracy(
    train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor, test_y: torch.Tensor, k: int = 5
) -> float:
    """Accuracy of k-nearest-neighbour voting (Euclidean, codes standardised by the training
    codes' mean and sd)."""
    mean, sd = train.mean(0), train.std(0).clamp_min(1e-8)
    train, test = (train - mean) / sd, (test - mean) / sd
    votes = []
    for start in range(0, len(test), 1000):
        nearest = torch.cdist(test[start : start + 1000], train).topk(k, largest=False).indices
        votes.append(torch.mode(train_y[nearest], dim=1).values)
    return float((torch.cat(votes) == test_y).double().mean())


def class_aligned_errors(
    inferred: torch.Tensor, applied: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """|inferred - applied - offset_c| wrapped to [0, pi], per image, where offset_c is the
    circular mean of inferred - applied over the images of its class c (the class's frame)."""
    difference = (inferred - applied).double()
    errors = torch.empty_like(difference)
    for c in classes.unique():
        d = difference[classes == c]
        offset = torch.atan2(d.sin().mean(), d.cos().mean())
        errors[classes == c] = wrapped(d - offset).abs()
    return errors


def _measure(run_dir: Path, rotated, invariant: bool) -> dict:
    data = rotated.data
    run = load_run(run_dir, device="cpu", data=data)
    train_x = Binarizer("static", data, seed=0).train_x()  # one fixed draw of the training set
    codes = run.vae.encode(run.test_x)
    row = {
        "knn_accuracy": knn_accuracy(run.vae.encode(train_x), data.train_y, codes, data.test_y),
        "latent_dims": int(codes.shape[1]) + (3 if invariant else 0),
        "run": str(run_dir),
    }
    if invariant:
        angle, _ = run.vae.pose(run.test_x)
        row["angle_correlation"] = circular_correlation(angle, rotated.test_angles)
        row["axis_correlation"] = circular_correlation(2 * angle, 2 * rotated.test_angles)
        errors = class_aligned_errors(angle, rotated.test_angles, data.test_y)
        row["angle_error_deg"] = math.degrees(float(errors.median()))
        row["within_30_deg"] = float((errors < math.radians(30)).double().mean())
        row["angles"] = (angle.tolist(), rotated.test_angles.tolist(), data.test_y.tolist())
    return row


def plot_angles(panels: list[tuple[str, tuple[list, list, list]]], path: Path) -> None:
    """Inferred angle against the applied rotation, a colour per digit, a panel per run."""
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels) + 0.8, 4.2), squeeze=False,
        layout="constrained",
    )  # fmt: skip
    for ax, (title, angles) in zip(axes[0], panels, strict=True):
        inferred, applied, digits = (torch.tensor(v) for v in angles)
        points = ax.scatter(applied, wrapped(inferred), c=digits, cmap="tab10", s=6, alpha=0.7)
        ax.set_xlabel("applied rotation (radians)")
        ax.set_ylim(-math.pi, math.pi)
        ax.set_title(title, fontsize=9)
    axes[0][0].set_ylabel("inferred angle, wrapped to [-pi, pi)")
    fig.colorbar(points, ax=axes[0].tolist(), label="digit")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=at_least(1), default=20, help="training epochs of each run")
    p.add_argument("--z-dim", type=at_least(1), default=4, help="content dimensions")
    p.add_argument(
        "--rotations", type=at_least(0), nargs="+", default=[8, 0], metavar="R",
        help="an invariant run per value: R turns searched, or 0 for one Gaussian angle",
    )  # fmt: skip
    p.add_argument(
        "--hidden", type=at_least(1), nargs="+", default=[64, 64], metavar="N",
        help="hidden sizes (the invariant decoder runs them once per pixel)",
    )  # fmt: skip
    p.add_argument(
        "--beta", type=at_least(0, float), default=1.0,
        help="both runs' weight on z's KL (the invariant model's pose sites too)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="the seed of both runs")
    p.add_argument("--device", default="auto", help=option_help("device"))
    p.add_argument("--out", default="runs/invariance", help="where the runs and tables go")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@study("invariance", "the invariant VAE's pose and content against a plain VAE", _arguments)
def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    rotated = rotated_mnist_sample()
    runs = [("invariant", args.z_dim, r, f"invariant-r{r}") for r in args.rotations]
    rows, panels = [], []
    for model, z_dim, rotations, name in [*runs, ("vae", args.z_dim + 3, None, "vae")]:
        extra = {} if rotations is None else {"rotations": rotations}
        config = TrainConfig(
            dataset="mnist-rotated", model=model, z_dim=z_dim, hidden=tuple(args.hidden),
            beta=args.beta, epochs=args.epochs, seed=args.seed, device=args.device,
            out=str(out / name), progress=not args.no_progress, **extra,
        )  # fmt: skip
        summary = train_or_reuse(config, rotated.data)
        row = _measure(out / name, rotated, model == "invariant")
        if "angles" in row:
            how = f"{rotations} turns searched" if rotations else "one Gaussian angle"
            panels.append((f"invariant VAE, {how}: test digits", row.pop("angles")))
        rows.append({"model": name, "rotations": rotations, **row,
                     "test_neg_elbo": summary["test_neg_elbo"]})  # fmt: skip
    plot_angles(panels, out / "invariance.png")
    write_tables(
        out,
        "invariance",
        chosen_options(args),
        rows,
        f"mnist-rotated test digits; {args.epochs} epochs, MLP {tuple(args.hidden)}; 5-NN "
        "classifier fitted on the training digits' codes; angle error after removing each "
        "digit's own offset",
        [
            ("model", "model", ""),
            ("latent_dims", "latent dims", ""),
            ("test_neg_elbo", "test -ELBO", ".2f"),
            ("angle_correlation", "angle correlation", ".3f"),
            ("axis_correlation", "correlation of doubled angles", ".3f"),
            ("angle_error_deg", "median angle error, degrees", ".1f"),
            ("within_30_deg", "share within 30 degrees", ".2f"),
            ("knn_accuracy", "5-NN accuracy on the codes", ".3f"),
        ],
    )
    print((out / "invariance.md").read_text())
    return 0
