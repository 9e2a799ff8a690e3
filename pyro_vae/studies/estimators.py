"""Estimator comparison: one architecture trained with each objective and beta, then measured.

    pyro-vae study estimators --dataset mnist-sample --epochs 100 --out runs/estimators

For each estimator (Trace_ELBO, TraceMeanField_ELBO, IWAE k=5 and k=50 with standard and DReG
gradients, and the rest of the bound family: VR-0.5, MIWAE, PIWAE, CIWAE) and each beta it
trains a run (``OUT/<estimator>-beta<b>``), evaluates its test log p(x) with K importance
samples and, with ``--ais-steps T``, by AIS on the same images (IS - AIS per cell, and each
estimator's rank by either: does a tighter evaluation reorder them? Wu et al., 2017), and
writes ``estimators.json``, ``estimators.md`` and ``estimators.png``. Finished runs and
evaluations are reused and stopped runs resumed, so a long study that is killed picks up where
it was.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import load_dataset
from ..inference.annealing import AnnealingSettings
from ..report.plots import plt
from ..training import TrainConfig
from .harness import (
    at_least,
    measure_arguments,
    option_help,
    run_arguments,
    study,
    study_metadata,
    train_and_measure,
)
from .tables import of_total, plus_minus, write_tables


@dataclass(frozen=True)
class Estimator:
    label: str
    name: str
    particles: int = 1
    grad: str = "standard"
    options: tuple[tuple[str, float], ...] = ()  # the estimator's other options (alpha, groups)

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
    Estimator("VR-0.5 k=5", "renyi", 5, options=(("alpha", 0.5),)),
    Estimator("MIWAE M=4 k=5", "miwae", 5, options=(("groups", 4),)),
    Estimator("PIWAE M=4 k=5", "piwae", 5, options=(("groups", 4),)),
    Estimator("CIWAE 0.5 k=5", "ciwae", 5, options=(("ciwae_mix", 0.5),)),
]


def compare(
    dataset: str = "mnist-sample",
    epochs: int = 100,
    betas: Sequence[float] = (0.5, 1.0, 4.0),
    estimators: Sequence[Estimator] = tuple(ESTIMATOR_SET),
    out: str | Path = "runs/estimators",
    num_samples: int = 5000,
    max_images: int | None = None,
    annealing: AnnealingSettings | None = None,
    **train_options: Any,
) -> list[dict[str, Any]]:
    """Train and evaluate every estimator x beta (with ``annealing``, also by AIS); returns
    the table rows (also written)."""
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
                **dict(est.options),
                **train_options,
            )
            measured = train_and_measure(config, data, num_samples, max_images, annealing)
            rows.append({"estimator": est.label, "beta": beta, **measured})
            _write(out, _ranked(rows), dataset, epochs, num_samples, max_images, train_options)
    _figure(rows, out / "estimators.png", dataset)
    return _ranked(rows)


def _ranked(rows: list[dict]) -> list[dict]:
    """Each row with its estimator's rank among the rows of its beta by IS log p(x) and, where
    measured, by AIS (1: the highest)."""
    ranked = [dict(r) for r in rows]
    for key, rank in [("test_log_likelihood", "rank_is"), ("test_log_likelihood_ais", "rank_ais")]:
        for beta in {r["beta"] for r in ranked}:
            cell = [r for r in ranked if r["beta"] == beta and key in r]
            for i, r in enumerate(sorted(cell, key=lambda r: -r[key])):
                r[rank] = i + 1
    return ranked


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
    write_tables(
        out,
        "estimators",
        meta,
        rows,
        f"{dataset}, {epochs} epochs, "
        + ", ".join(f"{k}={v}" for k, v in meta.items() if k not in ("dataset", "epochs")),
        [
            ("estimator", "estimator", ""),
            ("beta", "beta", "g"),
            ("test_neg_elbo", "test -ELBO", ".2f"),
            ("", f"test log p(x) (K={num_samples})", plus_minus(
                "test_log_likelihood", "test_log_likelihood_stderr"
            )),
            ("", "active units", of_total("active_units", "z_dim")),
            ("seconds_per_epoch", "s/epoch", ".2f"),
        ] + ([
            ("", "test log p(x) (AIS)", plus_minus(
                "test_log_likelihood_ais", "test_log_likelihood_ais_stderr"
            )),
            ("is_minus_ais", "IS - AIS", "+.2f"),
            ("rank_is", "rank (IS)", ""),
            ("rank_ais", "rank (AIS)", ""),
        ] if any("test_log_likelihood_ais" in r for r in rows) else []),
    )  # fmt: skip


def _figure(rows: list[dict], path: Path, dataset: str) -> None:
    """Test log p(x) and test -ELBO per estimator, a bar per beta."""
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


def _arguments(p: argparse.ArgumentParser) -> None:
    run_arguments(p, "runs/estimators", epochs=100, z_dim=50, hidden=(200, 200))
    measure_arguments(p)
    p.add_argument(
        "--betas",
        type=float,
        nargs="+",
        default=[0.5, 1.0, 4.0],
        metavar="BETA",
        help="the KL weights each estimator is trained with",
    )
    p.add_argument(
        "--estimators",
        nargs="+",
        default=None,
        metavar="SLUG",
        help="the estimators to compare, a subset of: "
        + ", ".join(e.slug for e in ESTIMATOR_SET)
        + " (default: all)",
    )
    p.add_argument(
        "--ais-steps",
        type=at_least(1),
        default=None,
        metavar="T",
        help="also measure log p(x) by AIS with T annealing steps (8 chains, 2 leapfrog steps), "
        "on the same images as IS (default: IS only)",
    )
    p.add_argument("--batch-size", type=int, default=128, help=option_help("batch_size"))
    p.add_argument("--lr", type=float, default=1e-3, help=option_help("lr"))


@study(
    "estimators",
    "one architecture trained with each estimator and beta, compared by test log p(x)",
    _arguments,
)
def run(args: argparse.Namespace) -> int:
    chosen = ESTIMATOR_SET
    if args.estimators:
        known = {e.slug: e for e in ESTIMATOR_SET}
        unknown = [slug for slug in args.estimators if slug not in known]
        if unknown:
            raise ValueError(f"unknown estimator(s) {unknown}; choose from {list(known)}")
        chosen = [known[slug] for slug in args.estimators]
    compare(
        dataset=args.dataset,
        epochs=args.epochs,
        betas=args.betas,
        estimators=chosen,
        out=args.out,
        num_samples=args.num_samples,
        max_images=args.max_eval_images,
        annealing=None if args.ais_steps is None else AnnealingSettings(num_steps=args.ais_steps),
        data_dir=args.data_dir,
        hidden=tuple(args.hidden),
        z_dim=args.z_dim,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print((Path(args.out) / "estimators.md").read_text())
    return 0
