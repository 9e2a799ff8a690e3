"""Estimator comparison: one architecture trained with each objective and beta, then measured.

    pyro-vae compare --dataset mnist-sample --epochs 100 --out runs/compare-mnist-sample

For each estimator (Trace_ELBO, TraceMeanField_ELBO, IWAE k=5 and k=50, standard and DReG
gradients) and each beta it trains a run (``OUT/<estimator>-beta<b>``), evaluates its test
log p(x) with K importance samples, and writes ``compare.json``, ``compare.md`` and
``compare.png``. Finished runs are reused and stopped ones resumed, so a long study that is
killed picks up where it was.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runs
from .config import TrainConfig
from .data import load_dataset
from .studies import study_metadata, train_and_measure


@dataclass(frozen=True)
class Estimator:
    label: str
    name: str
    particles: int = 1
    grad: str = "standard"

    @property
    def slug(self) -> str:
        return self.label.lower().replace(" ", "-").replace("=", "")


ESTIMATOR_SET = [
    Estimator("Trace_ELBO", "trace"),
    Estimator("TraceMeanField_ELBO", "mean-field"),
    Estimator("IWAE k=5", "iwae", 5),
    Estimator("IWAE k=5 DReG", "iwae", 5, "dreg"),
    Estimator("IWAE k=50", "iwae", 50),
    Estimator("IWAE k=50 DReG", "iwae", 50, "dreg"),
]


def compare(
    dataset: str = "mnist-sample",
    epochs: int = 100,
    betas: Sequence[float] = (0.5, 1.0, 4.0),
    estimators: Sequence[Estimator] = tuple(ESTIMATOR_SET),
    out: str | Path = "runs/compare",
    num_samples: int = 5000,
    max_images: int | None = None,
    **train_options: Any,
) -> list[dict[str, Any]]:
    """Train and evaluate every estimator x beta; returns the table rows (also written)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(dataset, train_options.get("data_dir"))
    rows = []
    for beta in betas:
        for est in estimators:
            config = TrainConfig(
                dataset=dataset,
                epochs=epochs,
                beta=beta,
                estimator=est.name,
                particles=est.particles,
                grad=est.grad,
                out=str(out / f"{est.slug}-beta{beta:g}"),
                **train_options,
            )
            measured = train_and_measure(config, data, num_samples, max_images)
            rows.append({"estimator": est.label, "beta": beta, **measured})
            _write(out, rows, dataset, epochs, num_samples, max_images, train_options)
    _figure(rows, out / "compare.png", dataset)
    return rows


def _write(
    out: Path,
    rows: list[dict],
    dataset: str,
    epochs: int,
    num_samples: int,
    max_images: int | None,
    options: dict,
) -> None:
    meta = {
        **study_metadata(dataset, epochs, num_samples, max_images),
        **{k: v for k, v in options.items() if k != "progress"},
    }
    runs.write_json(out / "compare.json", {"config": meta, "rows": rows})
    lines = [
        f"{dataset}, {epochs} epochs, "
        + ", ".join(f"{k}={v}" for k, v in meta.items() if k not in ("dataset", "epochs")),
        "",
        f"| estimator | beta | test -ELBO | test log p(x) (K={num_samples}) | active units "
        "| s/epoch |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['estimator']} | {r['beta']:g} | {r['test_neg_elbo']:.2f} | "
            f"{r['test_log_likelihood']:.2f} ± {r['test_log_likelihood_stderr']:.2f} | "
            f"{r['active_units']}/{r['z_dim']} | {r['seconds_per_epoch']:.2f} |"
        )
    runs.atomic_write(out / "compare.md", lambda f: f.write(("\n".join(lines) + "\n").encode()))


def _figure(rows: list[dict], path: Path, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r["estimator"] for r in rows))
    betas = list(dict.fromkeys(r["beta"] for r in rows))
    width = 0.8 / len(betas)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, key, title in [
        (axes[0], "test_log_likelihood", "test log p(x) (K importance samples), higher is better"),
        (axes[1], "test_neg_elbo", "test -ELBO, lower is better"),
    ]:
        for j, beta in enumerate(betas):
            vals = [
                next(
                    (r[key] for r in rows if r["estimator"] == lab and r["beta"] == beta), math.nan
                )
                for lab in labels
            ]
            ax.bar(
                [i + (j - (len(betas) - 1) / 2) * width for i in range(len(labels))],
                vals,
                width,
                label=f"beta={beta:g}",
            )
        finite = [r[key] for r in rows if math.isfinite(r[key])]
        lo, hi = min(finite), max(finite)
        ax.set_ylim(lo - 0.15 * (hi - lo) - 1, hi + 0.15 * (hi - lo) + 1)
        ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("nats per image")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"estimator comparison on {dataset}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist-sample")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--betas", type=float, nargs="+", default=[0.5, 1.0, 4.0])
    p.add_argument(
        "--estimators",
        nargs="+",
        default=None,
        metavar="LABEL",
        help="a subset of: " + "; ".join(e.label for e in ESTIMATOR_SET),
    )
    p.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=[200, 200],
        help="MLP hidden sizes (default: Burda et al.'s 200 200)",
    )
    p.add_argument("--z-dim", type=int, default=50, help="latent size (default: 50, as Burda)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-samples", type=int, default=5000, help="K for test log p(x)")
    p.add_argument(
        "--max-eval-images",
        type=int,
        default=None,
        help="evaluate log p(x) on the first N test images only",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/compare")
    p.add_argument("--no-progress", action="store_true")


def run_from_args(args: argparse.Namespace) -> list[dict[str, Any]]:
    chosen = ESTIMATOR_SET
    if args.estimators:
        known = {e.label: e for e in ESTIMATOR_SET}
        unknown = [label for label in args.estimators if label not in known]
        if unknown:
            raise ValueError(f"unknown estimator label(s) {unknown}; choose from {list(known)}")
        chosen = [known[label] for label in args.estimators]
    rows = compare(
        dataset=args.dataset,
        epochs=args.epochs,
        betas=args.betas,
        estimators=chosen,
        out=args.out,
        num_samples=args.num_samples,
        max_images=args.max_eval_images,
        data_dir=args.data_dir,
        hidden=tuple(args.hidden),
        z_dim=args.z_dim,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print((Path(args.out) / "compare.md").read_text())
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    run_from_args(parser.parse_args(argv))
