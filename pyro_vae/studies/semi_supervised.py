"""semi-supervised: M2's classifier q(y | x) against the same network trained on the labelled
images alone (Kingma et al., 2014, table 1's comparison).

    pyro-vae study semi-supervised --datasets mnist-sample fashion-mnist --labels 100 600 1000

For each dataset, label budget and seed: one M2 run (``--model m2 --labels N --seed S``: the
labelled images are a class-balanced draw by the seed) and the labelled-only classifier on
the very same labelled images (:mod:`pyro_vae.checks.baseline_classifier`). M2 weights z's KL
by ``--beta`` (3: at 1 the decoder ignores the class, and the unlabelled images teach q(y|x)
nothing). The table gives the test classification error of each, mean +- sd over the seeds
(M2's after its last epoch, and averaged over its last five); the figure, error against the
number of labels. Every M2 run also draws its samples with the class fixed per row and z
shared down each column (``figures/prior_samples.png``): whether the class holds the digit
and z the style. Writes semi_supervised.json, semi_supervised.md and semi_supervised.png.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

from ..checks.baseline_classifier import test_error, train_labelled_only
from ..data import Binarizer, balanced_choice, load_dataset
from ..report.plots import plt
from ..training import TrainConfig
from ..training.option_help import option_help
from ..training.run_dir import METRICS, read_metrics
from .harness import announce, at_least, chosen_options, study, train_or_reuse
from .tables import write_tables

LABELS = (100, 600, 1000)
SEEDS = (0, 1, 2)
LATE_EPOCHS = 5
# With beta = 1 the decoder ignores y and the unlabelled images teach q(y|x) nothing (M2 tied
# the labelled-only classifier); a dearer z moves the class into y (docs/class_variable.md).
BETA = 3.0


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def late_error(run_dir: Path, epochs: int) -> float:
    """M2's test error averaged over its last ``epochs`` epochs: with hundreds of times the
    weight on a handful of labelled rows per batch, the last epoch alone moves by a few
    points from one epoch to the next (an average, not the best epoch: no choice by test error)."""
    errors = [row["test_error"] for row in read_metrics(run_dir / METRICS)][-epochs:]
    return statistics.fmean(errors)


def labelled_only_error(
    dataset: str, data, labels: int, seed: int, hidden: Sequence[int], steps: int
) -> float:
    """Test error of the classifier trained on the ``labels`` images M2's run with ``seed``
    sees labelled, on the runs' fixed binarization of the test images."""
    chosen = balanced_choice(data.train_y, labels, seed)
    classes = int(data.train_y.max()) + 1
    net = train_labelled_only(
        data.train_x[chosen], data.train_y[chosen], classes, hidden, seed, steps=steps
    )
    test_x = Binarizer("dynamic", data, seed=seed).test_x
    return test_error(net, test_x, data.test_y)


def semi_supervised(args: argparse.Namespace) -> list[dict]:
    """Every (dataset, labels, seed) cell, trained or reused; returns the table's rows."""
    out = Path(args.out)
    rows = []
    for dataset in args.datasets:
        data = load_dataset(dataset, args.data_dir if dataset != "mnist-sample" else None)
        for labels in args.labels:
            m2, m2_late, alone = [], [], []
            for seed in args.seeds:
                run_dir = out / dataset / f"labels{labels}" / f"seed{seed}"
                config = TrainConfig(
                    dataset=dataset, model="m2", labels=labels, seed=seed, epochs=args.epochs,
                    z_dim=args.z_dim, beta=args.beta, hidden=tuple(args.hidden),
                    device=args.device,
                    out=str(run_dir), progress=not args.no_progress,
                )  # fmt: skip
                m2.append(train_or_reuse(config, data)["test_error"])
                m2_late.append(late_error(run_dir, LATE_EPOCHS))
                announce(f"{dataset}, {labels} labels, seed {seed}: the labelled-only classifier")
                alone.append(
                    labelled_only_error(dataset, data, labels, seed, args.hidden, args.steps)
                )
            (m2_mean, m2_sd), (alone_mean, alone_sd) = _mean_sd(m2), _mean_sd(alone)
            late_mean, late_sd = _mean_sd(m2_late)
            rows.append(
                {
                    "dataset": dataset, "labels": labels, "seeds": len(args.seeds),
                    "m2_error": m2_mean, "m2_error_sd": m2_sd, "m2_errors": m2,
                    "alone_error": alone_mean, "alone_error_sd": alone_sd,
                    "m2_late_error": late_mean, "m2_late_error_sd": late_sd,
                    "m2_late_errors": m2_late, "alone_errors": alone,
                    "m2_better": all(a < b for a, b in zip(m2, alone, strict=True)),
                    "m2_late_better": all(a < b for a, b in zip(m2_late, alone, strict=True)),
                }
            )  # fmt: skip
    return rows


def _pm(key: str):
    return lambda r: f"{100 * r[key]:.1f} ± {100 * r[key + '_sd']:.1f}"


def plot_errors(rows: list[dict], path: Path) -> None:
    """Test error against labels, M2 and the labelled-only classifier, a panel per dataset."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        mine = [r for r in rows if r["dataset"] == dataset]
        labels = [r["labels"] for r in mine]
        for key, name in (("m2", "M2: q(y|x)"), ("alone", "labelled images only")):
            means = [100 * r[f"{key}_error"] for r in mine]
            sds = [100 * r[f"{key}_error_sd"] for r in mine]
            ax.errorbar(labels, means, yerr=sds, marker="o", capsize=3, label=name)
        ax.set_xscale("log")
        ax.set_xticks(labels, [str(n) for n in labels])
        ax.set_xlabel("labelled training images")
        ax.set_ylabel("test error, % (mean ± sd over seeds)")
        ax.set_title(dataset, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", nargs="+", default=["mnist-sample"], help="the data sets")
    p.add_argument("--data-dir", default=None, help=option_help("data_dir"))
    p.add_argument(
        "--labels", type=at_least(0), nargs="+", default=list(LABELS), metavar="N",
        help="label budgets: labelled training images (multiples of the classes)",
    )  # fmt: skip
    p.add_argument(
        "--seeds", type=at_least(0), nargs="+", default=list(SEEDS), metavar="S",
        help="one run per seed (the seed also draws the labelled images)",
    )  # fmt: skip
    p.add_argument("--epochs", type=at_least(1), default=50, help="M2's training epochs")
    p.add_argument(
        "--steps", type=at_least(1), default=2000,
        help="Adam steps of the labelled-only classifier",
    )  # fmt: skip
    p.add_argument("--z-dim", type=at_least(1), default=16, help="M2's latent dimensions")
    p.add_argument(
        "--beta", type=at_least(0, float), default=BETA,
        help="M2's weight on z's KL: above 1, z costs more than the class, so the class "
        "carries the digit (docs/class_variable.md)",
    )  # fmt: skip
    p.add_argument(
        "--hidden", type=at_least(1), nargs="+", default=[400], metavar="N",
        help="hidden sizes of every network (the classifier's too)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help=option_help("device"))
    p.add_argument("--out", default="runs/semi-supervised", help="where the runs and tables go")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@study("semi-supervised", "M2's classifier against the labelled images alone", _arguments)
def run(args: argparse.Namespace) -> int:
    rows = semi_supervised(args)
    out = Path(args.out)
    write_tables(
        out,
        "semi_supervised",
        chosen_options(args),
        rows,
        f"test classification error, % (mean ± sd over {len(args.seeds)} seeds); M2 "
        f"{args.epochs} epochs, MLP {tuple(args.hidden)}, z={args.z_dim}, beta={args.beta}; the "
        f"labelled-only classifier: the same network, {args.steps} Adam steps on the labelled "
        "images",
        [
            ("dataset", "data", ""),
            ("labels", "labels", ""),
            ("m2_error", "M2 q(y\\|x)", _pm("m2_error")),
            ("m2_late_error", f"M2, last {LATE_EPOCHS} epochs' mean", _pm("m2_late_error")),
            ("alone_error", "labelled only", _pm("alone_error")),
            ("m2_better", "M2 better in every seed", ""),
            ("m2_late_better", "late mean better in every seed", ""),
        ],
    )
    plot_errors(rows, out / "semi_supervised.png")
    print((out / "semi_supervised.md").read_text())
    return 0
