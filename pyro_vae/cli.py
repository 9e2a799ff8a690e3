"""The ``pyro-vae`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .data import BINARIZATIONS, DATASETS
from .likelihoods import LIKELIHOODS
from .nets import NETWORKS
from .objectives import ESTIMATORS
from .priors import PRIORS
from .reference import ReferenceMismatch
from .training import TrainConfig, train

DEFAULTS = TrainConfig()


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a VAE with SVI and write a run directory",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = DEFAULTS
    p.add_argument("--dataset", default=d.dataset, help=f"one of {DATASETS.names()}")
    p.add_argument(
        "--data-dir", default=None, help="directory with IDX files (mnist, fashion-mnist)"
    )
    p.add_argument(
        "--binarize",
        default=d.binarize,
        choices=BINARIZATIONS,
        help="dynamic: fresh Bernoulli draw each epoch; static: one fixed draw",
    )
    p.add_argument("--network", default=d.network, help=f"one of {NETWORKS.names()}")
    p.add_argument("--hidden", default=d.hidden, type=int, nargs="+", help="MLP hidden sizes")
    p.add_argument("--likelihood", default=d.likelihood, help=f"one of {LIKELIHOODS.names()}")
    p.add_argument("--sigma", default=d.sigma, type=float, help="fixed sigma of 'gaussian'")
    p.add_argument(
        "--sigma-floor",
        default=d.sigma_floor,
        type=float,
        help="lower bound on the learned sigma of 'gaussian-learned'",
    )
    p.add_argument("--prior", default=d.prior, help=f"one of {PRIORS.names()}")
    p.add_argument("--components", default=d.components, type=int, help="mixture prior size")
    p.add_argument(
        "--estimator",
        default=d.estimator,
        help=f"one of {ESTIMATORS.names()} (Trace_ELBO, TraceMeanField_ELBO)",
    )
    p.add_argument("--particles", default=d.particles, type=int, help="samples per image")
    p.add_argument("--beta", default=d.beta, type=float, help="KL weight (beta-VAE); 0 allowed")
    p.add_argument(
        "--kl-warmup-epochs",
        default=d.kl_warmup_epochs,
        type=float,
        help="raise beta linearly from 0 over this many epochs",
    )
    p.add_argument("--z-dim", default=d.z_dim, type=int, help="latent dimensions")
    p.add_argument("--epochs", default=d.epochs, type=int, help="passes over the training set")
    p.add_argument("--batch-size", default=d.batch_size, type=int, help="images per SVI step")
    p.add_argument("--lr", default=d.lr, type=float, help="Adam learning rate")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--seed", default=d.seed, type=int, help="seeds Pyro, torch and the batches")
    p.add_argument("--out", default=d.out, help="run directory")
    p.add_argument(
        "--skip-reference-check",
        action="store_true",
        help="do not compare Pyro's loss with the hand-written loss on the first batch",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _train(args: argparse.Namespace) -> int:
    config = TrainConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        binarize=args.binarize,
        network=args.network,
        hidden=tuple(args.hidden),
        likelihood=args.likelihood,
        sigma=args.sigma,
        sigma_floor=args.sigma_floor,
        prior=args.prior,
        components=args.components,
        estimator=args.estimator,
        particles=args.particles,
        beta=args.beta,
        kl_warmup_epochs=args.kl_warmup_epochs,
        z_dim=args.z_dim,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        seed=args.seed,
        out=args.out,
        check_reference=not args.skip_reference_check,
        progress=not args.no_progress,
    )
    result = train(config)
    s = result.summary
    if s["reference_check"]:
        rc = s["reference_check"]
        print(
            f"reference check: Pyro loss {rc['pyro_loss']:.4f} = hand-written "
            f"{rc['reference_loss']:.4f} on the first batch"
        )
    keys = ["test_neg_elbo", "test_distortion", "test_rate", "train_neg_elbo", "seconds_per_epoch"]
    print(json.dumps({k: round(s[k], 4) for k in keys}))
    print(f"run directory: {config.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pyro-vae", description="Variational autoencoders as Pyro models, trained by SVI."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    args = parser.parse_args(argv)
    try:
        return _train(args)
    except (ValueError, FloatingPointError, ReferenceMismatch, OSError) as err:
        if args.debug:
            raise
        print(f"pyro-vae: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyro-vae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
