"""clustering: how well the joint VAE's class variable c matches the digit classes, as the
weight on z's KL grows.

    pyro-vae study clustering --betas 1 3 10

One ``joint`` run per beta (c enumerated, ``--classes`` values; beta weights z's KL only, so
c's KL stays at weight 1). With beta = 1, z's dimensions hold the digit as cheaply as c
does, and c is left to split the data some other way; a dearer z moves the digit into c,
whose KL is at most log K. Measured on the test images: cluster accuracy, argmax q(c|x)
matched to the classes one-to-one by the Hungarian algorithm
(:func:`pyro_vae.inference.class_measures.cluster_accuracy`), and the test -ELBO at the
run's own beta. The figure puts accuracy against beta beside the per-cluster samples of the
most accurate run (a row per value of c, one z per column: its ``prior_samples.png``).
Writes clustering.json, clustering.md and clustering.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data import load_dataset
from ..report.plots import plt
from ..training import TrainConfig
from ..training.option_help import option_help
from ..training.run_dir import FIGURES
from .harness import at_least, chosen_options, run_arguments, study, train_or_reuse
from .tables import write_tables

BETAS = (1.0, 3.0, 10.0)
SAMPLES = "prior_samples.png"  # the run's samples, a row per value of c


def clustering(args: argparse.Namespace) -> list[dict]:
    """One joint run per beta, trained or reused; returns the table's rows."""
    out = Path(args.out)
    data = load_dataset(args.dataset, args.data_dir)
    rows = []
    for beta in args.betas:
        run_dir = out / f"beta{beta:g}"
        # a fresh config, not base_config's: that one's automatic choices (the estimator)
        # were made for the default model
        config = TrainConfig(
            dataset=args.dataset, data_dir=args.data_dir, model="joint", classes=args.classes,
            beta=beta, z_dim=args.z_dim, hidden=tuple(args.hidden), epochs=args.epochs,
            seed=args.seed, device=args.device, out=str(run_dir),
            progress=not args.no_progress,
        )  # fmt: skip
        summary = train_or_reuse(config, data)
        rows.append(
            {
                "beta": beta, "cluster_accuracy": 1.0 - summary["test_error"],
                "test_neg_elbo": summary["test_neg_elbo"], "test_rate": summary["test_rate"],
                "run": str(run_dir),
            }
        )  # fmt: skip
    return rows


def plot_clustering(rows: list[dict], classes: int, path: Path) -> None:
    """Cluster accuracy against beta, and the most accurate run's per-cluster samples (over
    replicates: the mean accuracy with ± sd bars, and the first replicate's samples)."""
    import matplotlib.image as mpimg

    fig, (ax, shown) = plt.subplots(1, 2, figsize=(10, 4.6), width_ratios=(1, 1.1))
    betas = [r["beta"] for r in rows]
    accuracy = [r["cluster_accuracy"] for r in rows]
    if any("cluster_accuracy_sd" in r for r in rows):
        spread = [r.get("cluster_accuracy_sd", 0.0) for r in rows]
        ax.errorbar(betas, accuracy, yerr=spread, marker="o", capsize=3)
    else:
        ax.plot(betas, accuracy, marker="o")
    ax.axhline(1 / classes, color="grey", ls=":", label=f"chance (1/{classes})")
    if min(betas) > 0:
        ax.set_xscale("log")
    else:  # beta = 0 (an autoencoder's z) on a linear stretch below 1
        ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(betas, [f"{b:g}" for b in betas])
    ax.set_xlabel("beta: the weight on z's KL")
    ax.set_ylabel("test cluster accuracy (best one-to-one matching)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    best = max(rows, key=lambda r: r["cluster_accuracy"])
    run_dir = best["run"][0] if isinstance(best["run"], list) else best["run"]  # replicates'
    shown.imshow(mpimg.imread(Path(run_dir) / FIGURES / SAMPLES))
    shown.set_title(f"beta = {best['beta']:g}: a row per value of c, one z per column", fontsize=9)
    shown.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _arguments(p: argparse.ArgumentParser) -> None:
    run_arguments(p, "runs/clustering", epochs=30, z_dim=16)
    p.add_argument(
        "--betas", type=at_least(0, float), nargs="+", default=list(BETAS), metavar="B",
        help="weights on z's KL, one run each",
    )  # fmt: skip
    p.add_argument("--classes", type=at_least(2), default=10, help=option_help("classes"))


def _figure_over_replicates(tables: dict[str, list[dict]], args: argparse.Namespace) -> None:
    plot_clustering(tables["clustering"], args.classes, Path(args.out) / "clustering.png")


@study(
    "clustering",
    "the joint VAE's clusters against the classes, by beta",
    _arguments,
    _figure_over_replicates,
)
def run(args: argparse.Namespace) -> int:
    rows = clustering(args)
    out = Path(args.out)
    write_tables(
        out,
        "clustering",
        chosen_options(args),
        rows,
        f"joint VAE on {args.dataset}, {args.classes} values of c (enumerated), z={args.z_dim}, "
        f"MLP {tuple(args.hidden)}, {args.epochs} epochs, seed {args.seed}; test images",
        [
            ("beta", "beta", "g"),
            ("cluster_accuracy", "cluster accuracy", ".3f"),
            ("test_neg_elbo", "test -ELBO at that beta", ".2f"),
            ("test_rate", "test KL, nats", ".2f"),
        ],
    )
    plot_clustering(rows, args.classes, out / "clustering.png")
    print((out / "clustering.md").read_text())
    return 0
