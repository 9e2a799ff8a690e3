"""Priors, guides and models against the core VAE: test log p(x) for each variant.

    pyro-vae study models --dataset mnist-sample --epochs 100 --out runs/models-mnist

Every variant uses Burda et al.'s sizes (MLP 200-200, z = 50; the two-layer model 200-200 to
z1 = 100 and 100-100 to z2 = 50), the Bernoulli likelihood on dynamically binarized images,
batch 128, Adam 1e-3, and is measured by the same importance-sampled test log p(x). Finished
runs are reused and stopped ones resumed. Writes models.json, models.md and models.png.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import load_dataset
from ..report.plots import plt
from ..training import TrainConfig
from .harness import (
    measure_arguments,
    option_help,
    study,
    study_metadata,
    train_and_measure,
)
from .tables import of_total, plus_minus, write_tables


@dataclass(frozen=True)
class Variant:
    label: str
    slug: str
    options: dict[str, Any] = field(default_factory=dict)


VARIANTS = [
    Variant("VAE (core)", "vae"),
    Variant("mixture prior (10)", "mixture", dict(prior="mixture", components=10)),
    Variant("VampPrior (500)", "vamp", dict(prior="vamp", pseudo_inputs=500)),
    Variant("low-rank guide (rank 5)", "low-rank", dict(guide="low-rank", rank=5)),
    Variant("IAF guide (2 steps)", "iaf", dict(guide="iaf", flows=2)),
    Variant(
        "two-layer (Trace_ELBO)",
        "two-layer",
        dict(model="two-layer", estimator="trace", z_dim=100, z2_dim=50),
    ),
    Variant("VAE, IWAE k=5 DReG", "vae-iwae5", dict(estimator="iwae", particles=5, grad="dreg")),
    Variant(
        "two-layer, IWAE k=5 DReG",
        "two-layer-iwae5",
        dict(model="two-layer", estimator="iwae", particles=5, grad="dreg", z_dim=100, z2_dim=50),
    ),
]


def compare_models(
    dataset: str = "mnist-sample",
    epochs: int = 100,
    variants: Sequence[Variant] = tuple(VARIANTS),
    out: str | Path = "runs/models",
    num_samples: int = 5000,
    max_images: int | None = None,
    **train_options: Any,
) -> list[dict[str, Any]]:
    """Train and evaluate each variant; returns the rows (also written under ``out``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(dataset, train_options.get("data_dir"))
    rows = []
    for v in variants:
        options = dict(hidden=(200, 200), z_dim=50) | train_options | v.options
        config = TrainConfig(dataset=dataset, epochs=epochs, out=str(out / v.slug), **options)
        objective = config.estimator
        if config.estimator == "iwae":
            objective += f" k={config.particles} {config.grad}"
        measured = train_and_measure(config, data, num_samples, max_images)
        rows.append({"variant": v.label, "estimator": objective, **measured})
        _write(out, rows, dataset, epochs, num_samples, max_images)
    _figure(rows, out / "models.png", dataset)
    return rows


def _write(out: Path, rows, dataset, epochs, num_samples, max_images) -> None:
    core = next((r for r in rows if r["variant"] == VARIANTS[0].label), None)

    def gain(r: dict) -> str:
        if core is None:
            return ""
        return f"{r['test_log_likelihood'] - core['test_log_likelihood']:+.2f}"

    write_tables(
        out,
        "models",
        study_metadata(dataset, epochs, num_samples, max_images),
        rows,
        f"{dataset}, {epochs} epochs, test log p(x) with K = {num_samples} on "
        f"{max_images or 'all'} test images",
        [
            ("variant", "variant", ""),
            ("estimator", "objective", ""),
            ("", "test log p(x)", plus_minus("test_log_likelihood", "test_log_likelihood_stderr")),
            ("", "vs core", gain),
            ("test_neg_elbo", "test -ELBO", ".2f"),
            ("", "active units", of_total("active_units", "z_dim")),
            ("seconds_per_epoch", "s/epoch", ".2f"),
        ],
    )


def _figure(rows: list[dict], path: Path, dataset: str) -> None:
    """Test log p(x) per variant, with its standard error (over replicates: its sd)."""
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    names = [r["variant"] for r in rows][::-1]
    values = [r["test_log_likelihood"] for r in rows][::-1]
    sd = "test_log_likelihood_sd"  # over replicates
    errors = [r[sd] if sd in r else r["test_log_likelihood_stderr"] for r in rows][::-1]
    ax.barh(names, values, xerr=errors, color="C0")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    reach = [r.get(sd, 0.0) for r in rows][::-1]  # the error bars over replicates
    finite = [v + e * d for v, d in zip(values, reach, strict=True) for e in (-1, 1)]
    finite = [v for v in finite if math.isfinite(v)]
    ax.set_xlim(min(finite) - 3, max(finite) + 3)
    ax.set(xlabel="test log p(x), nats per image (higher is better)", title=dataset)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist-sample", help=option_help("dataset"))
    p.add_argument("--data-dir", default=None, help=option_help("data_dir"))
    p.add_argument("--epochs", type=int, default=100, help="training epochs of each run")
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        metavar="SLUG",
        help="the variants to compare, a subset of: "
        + ", ".join(v.slug for v in VARIANTS)
        + " (default: all)",
    )
    measure_arguments(p)
    p.add_argument("--device", default="auto", help=option_help("device"))
    p.add_argument("--seed", type=int, default=0, help="the seed of every run")
    p.add_argument("--out", default="runs/models", help="where the runs and tables go")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _figure_over_replicates(tables: dict[str, list[dict]], args: argparse.Namespace) -> None:
    _figure(tables["models"], Path(args.out) / "models.png", args.dataset)


@study(
    "models",
    "priors, guides and the two-layer model against the core VAE",
    _arguments,
    _figure_over_replicates,
)
def run(args: argparse.Namespace) -> int:
    chosen = list(VARIANTS)
    if args.variants:
        known = {v.slug: v for v in VARIANTS}
        unknown = [s for s in args.variants if s not in known]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; choose from {list(known)}")
        chosen = [known[s] for s in args.variants]
    compare_models(
        args.dataset,
        args.epochs,
        chosen,
        args.out,
        args.num_samples,
        args.max_eval_images,
        data_dir=args.data_dir,
        device=args.device,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print((Path(args.out) / "models.md").read_text())
    return 0
