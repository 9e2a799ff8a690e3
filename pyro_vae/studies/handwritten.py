"""pyro-vae against a hand-written PyTorch VAE: same networks, data, batches, epochs, seeds.

    pyro-vae study handwritten --epochs 100 --seeds 0 1 2 --out runs/handwritten

Trains both for each seed and evaluates both with the same evaluator
(:func:`pyro_vae.inference.evaluate_elbo`, analytic KL, one z per test image, same noise),
plus the hand-written model's own test loss. Writes handwritten.json and handwritten.md.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import pyro
import torch

from ..checks import train_handwritten
from ..data import ImageData, load_dataset
from ..inference import evaluate_elbo
from ..model import LIKELIHOODS, PRIORS, VAE
from ..training import TrainConfig, resolve_device
from ..training.option_help import option_help
from ..workflow import train
from .harness import chosen_options, study
from .tables import write_tables


def _evaluate(vae: VAE, x: torch.Tensor) -> float:
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
        pyro.set_rng_seed(12345)  # same posterior noise for both models
        return evaluate_elbo(vae.model, vae.guide, x).neg_elbo


def compare_one_seed(data: ImageData, config: TrainConfig) -> dict[str, Any]:
    """Both VAEs trained as ``config`` says (its seed, sizes, epochs), measured alike."""
    pyro_run = train(config, data)
    hand = train_handwritten(
        data,
        network=config.network,
        z_dim=config.z_dim,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=config.seed,
    )
    likelihood = LIKELIHOODS.create("bernoulli", data.train_x.shape[1])
    prior = PRIORS.create("normal", config.z_dim).to(data.train_x.device)
    hand_vae = VAE(hand["encoder"], hand["decoder"], likelihood, prior)
    row = {
        "seed": config.seed,
        "pyro_test_neg_elbo": _evaluate(pyro_run.vae, hand["test_x"]),
        "handwritten_test_neg_elbo": _evaluate(hand_vae, hand["test_x"]),
        "handwritten_own_test_loss": hand["test_neg_elbo"],
        "pyro_seconds_per_epoch": pyro_run.summary["seconds_per_epoch"],
        "handwritten_seconds_per_epoch": hand["seconds_per_epoch"],
    }
    row["difference"] = row["pyro_test_neg_elbo"] - row["handwritten_test_neg_elbo"]
    return row


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist-sample", help=option_help("dataset"))
    p.add_argument("--network", default="mlp", help=option_help("network"))
    p.add_argument("--z-dim", type=int, default=16, help="latent dimensions")
    p.add_argument("--epochs", type=int, default=100, help="training epochs of each run")
    p.add_argument("--batch-size", type=int, default=128, help=option_help("batch_size"))
    p.add_argument("--lr", type=float, default=1e-3, help=option_help("lr"))
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        metavar="SEED",
        help="one pair of runs per seed",
    )
    p.add_argument("--estimator", default="mean-field", help=option_help("estimator"))
    p.add_argument("--device", default="auto", help=option_help("device"))
    p.add_argument("--out", default="runs/handwritten", help="where the runs and tables go")


@study("handwritten", "pyro-vae against a hand-written PyTorch VAE, seed by seed", _arguments)
def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    out = Path(args.out)
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
        rows.append(compare_one_seed(data, config))
    diffs = [r["difference"] for r in rows]
    mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0] if k != "seed"}
    spread = statistics.stdev(diffs) if len(rows) > 1 else 0.0
    summary = {"seed": "mean", **mean, "sd_difference": spread}
    text = write_tables(
        out,
        "handwritten",
        chosen_options(args)
        | {"command": args.command, "device": str(device), "threads": torch.get_num_threads()},
        [*rows, summary],
        "test -ELBO of each model, the same evaluator and posterior noise for both; nats",
        [
            ("seed", "seed", ""),
            ("pyro_test_neg_elbo", "pyro-vae test -ELBO", ".2f"),
            ("handwritten_test_neg_elbo", "hand-written test -ELBO", ".2f"),
            ("difference", "difference", "+.2f"),
            ("pyro_seconds_per_epoch", "pyro-vae s/epoch", ".3f"),
            ("handwritten_seconds_per_epoch", "hand-written s/epoch", ".3f"),
        ],
    )
    print(text + f"\nsd of the difference over seeds: {spread:.2f}")
    return 0
