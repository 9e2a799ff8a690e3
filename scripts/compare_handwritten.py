"""pyro-vae against a hand-written PyTorch VAE: same networks, data, batches, epochs, seeds.

Trains both for each seed and evaluates both with the same evaluator
(:func:`pyro_vae.evaluation.evaluate_elbo`, analytic KL, one z per test image, same noise),
plus the hand-written model's own test loss. Writes JSON and prints a Markdown table.

    python scripts/compare_handwritten.py --epochs 100 --seeds 0 1 2 --out runs/compare_handwritten
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import pyro
import torch

from pyro_vae.data import load_dataset
from pyro_vae.evaluation import evaluate_elbo
from pyro_vae.handwritten import train_handwritten
from pyro_vae.likelihoods import Bernoulli
from pyro_vae.model import VAE
from pyro_vae.priors import StandardNormal
from pyro_vae.training import TrainConfig, resolve_device, train


def _evaluate(vae: VAE, x: torch.Tensor) -> float:
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
        pyro.set_rng_seed(12345)  # same posterior noise for both models
        return evaluate_elbo(vae.model, vae.guide, x).neg_elbo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist-sample")
    parser.add_argument("--network", default="mlp")
    parser.add_argument("--z-dim", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--estimator", default="mean-field")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/compare_handwritten")
    args = parser.parse_args()

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.dataset).to(device)
    rows = []
    for seed in args.seeds:
        config = TrainConfig(
            dataset=args.dataset,
            network=args.network,
            z_dim=args.z_dim,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=seed,
            estimator=args.estimator,
            likelihood="bernoulli",
            prior="normal",
            binarize="dynamic",
            device=str(device),
            out=str(out / f"pyro_seed{seed}"),
            progress=False,
        )
        pyro_run = train(config, data)
        hand = train_handwritten(
            data,
            network=args.network,
            z_dim=args.z_dim,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=seed,
        )
        hand_vae = VAE(
            hand["encoder"],
            hand["decoder"],
            Bernoulli(data.train_x.shape[1]),
            StandardNormal(args.z_dim).to(device),
        )
        row = {
            "seed": seed,
            "pyro_test_neg_elbo": _evaluate(pyro_run.vae, hand["test_x"]),
            "handwritten_test_neg_elbo": _evaluate(hand_vae, hand["test_x"]),
            "handwritten_own_test_loss": hand["test_neg_elbo"],
            "pyro_seconds_per_epoch": pyro_run.summary["seconds_per_epoch"],
            "handwritten_seconds_per_epoch": hand["seconds_per_epoch"],
        }
        row["difference"] = row["pyro_test_neg_elbo"] - row["handwritten_test_neg_elbo"]
        rows.append(row)
        print(json.dumps(row))

    def mean(key: str) -> float:
        return statistics.fmean(r[key] for r in rows)

    summary = {
        "config": vars(args) | {"device": str(device), "threads": torch.get_num_threads()},
        "runs": rows,
        "mean_pyro_test_neg_elbo": mean("pyro_test_neg_elbo"),
        "mean_handwritten_test_neg_elbo": mean("handwritten_test_neg_elbo"),
        "mean_difference": mean("difference"),
        "sd_difference": statistics.stdev(r["difference"] for r in rows) if len(rows) > 1 else 0.0,
    }
    (out / "compare_handwritten.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        "\n| seed | pyro-vae test -ELBO | hand-written test -ELBO | difference | "
        "pyro s/epoch | hand-written s/epoch |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['seed']} | {r['pyro_test_neg_elbo']:.2f} | {r['handwritten_test_neg_elbo']:.2f}"
            f" | {r['difference']:+.2f} | {r['pyro_seconds_per_epoch']:.3f}"
            f" | {r['handwritten_seconds_per_epoch']:.3f} |"
        )
    print(
        f"| mean | {summary['mean_pyro_test_neg_elbo']:.2f} | "
        f"{summary['mean_handwritten_test_neg_elbo']:.2f} | {summary['mean_difference']:+.2f} "
        f"(sd {summary['sd_difference']:.2f}) | | |"
    )


if __name__ == "__main__":
    main()
