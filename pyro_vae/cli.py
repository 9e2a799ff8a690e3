"""The ``pyro-vae`` command line.

Errors a user can fix (a mistyped name, a value out of range, missing data, a run directory in
the way) print one line and exit with status 2 before anything starts; ``--debug`` shows the
traceback instead. A non-finite loss exits with 3; SIGINT/SIGTERM save a checkpoint and exit
with 130/143.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from . import runs
from .conditional import CONTEXTS
from .config import TrainConfig
from .data import BINARIZATIONS, DATASETS
from .guides import GUIDES
from .likelihoods import LIBRARY_OPTIONS, LIKELIHOODS
from .nets import NETWORKS
from .objectives import ESTIMATORS
from .priors import PRIORS
from .reference import ReferenceMismatch
from .training import NonFiniteLoss, TrainingInterrupted, train

DEFAULTS = TrainConfig()
EXIT_USAGE, EXIT_NON_FINITE = 2, 3


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a VAE with SVI and write a run directory")
    d = DEFAULTS

    def option(flag: str, help: str, **kw: object) -> None:
        # default None: a resumed run can tell the options given from the ones left out
        name = flag.lstrip("-").replace("-", "_")
        p.add_argument(flag, default=None, help=f"{help} (default: {getattr(d, name)})", **kw)

    option("--dataset", f"one of {', '.join(DATASETS.names())}")
    option("--data-dir", "directory with the IDX files (mnist, fashion-mnist)")
    option(
        "--binarize",
        "auto: dynamic for bernoulli, none otherwise; dynamic: fresh Bernoulli draw each "
        "epoch; static: one fixed draw",
        choices=("auto", *BINARIZATIONS),
    )
    option("--network", f"one of {', '.join(NETWORKS.names())}")
    option("--hidden", "MLP hidden sizes", type=int, nargs="+")
    option("--likelihood", f"one of {', '.join(LIKELIHOODS.names())}")
    option("--sigma", "fixed sigma of 'gaussian'", type=float)
    option(
        "--sigma-floor",
        "lower bound on the learned scale of 'gaussian-learned', 'laplace'",
        type=float,
    )
    option("--beta-squeeze", "'beta' models x' = eps + (1 - 2 eps) x; this is eps", type=float)
    option(
        "--library",
        "count likelihoods: none (mean = exp(decoder)) or observed (library size x "
        "softmax(decoder))",
        choices=LIBRARY_OPTIONS,
    )
    option("--prior", f"one of {', '.join(PRIORS.names())}")
    option("--components", "mixture prior size", type=int)
    option("--pseudo-inputs", "VampPrior: number of learned pseudo-inputs", type=int)
    option("--model", "vae, or two-layer (two stochastic layers, Burda et al. 2016)")
    option("--z2-dim", "two-layer: size of the upper latent layer z2", type=int)
    option(
        "--context",
        "none, or a conditional VAE given the label or the top half of the image",
        choices=CONTEXTS,
    )
    option("--upper-hidden", "two-layer: hidden sizes between z1 and z2", type=int, nargs="+")
    option("--guide", f"variational family q(z|x): one of {', '.join(GUIDES.names())}")
    option("--rank", "low-rank guide: rank of the covariance's low-rank part", type=int)
    option("--flows", "iaf guide: number of flow steps", type=int)
    option("--flow-hidden", "iaf guide: hidden units per MADE (0: twice z_dim)", type=int)
    option(
        "--estimator", f"one of {', '.join(ESTIMATORS.names())} (Trace_ELBO, TraceMeanField_ELBO)"
    )
    option("--particles", "samples per image (K of the iwae bound)", type=int)
    option("--grad", "gradient estimator of iwae: standard, stl or dreg")
    option("--free-bits", "with --estimator free-bits: KL floor per dimension, nats", type=float)
    option("--capacity", "with --estimator capacity: target KL C_max, nats", type=float)
    option("--capacity-gamma", "with --estimator capacity: weight gamma of |KL - C|", type=float)
    option("--capacity-epochs", "with --estimator capacity: epochs to raise C from 0", type=float)
    option("--beta", "KL weight (beta-VAE); 0 allowed", type=float)
    option("--kl-warmup-epochs", "raise beta linearly from 0 over this many epochs", type=float)
    option("--z-dim", "latent dimensions", type=int)
    option("--epochs", "passes over the training set", type=int)
    option("--batch-size", "images per SVI step", type=int)
    option("--lr", "Adam learning rate", type=float)
    option("--device", "auto, cpu or cuda")
    option("--precision", "fp32, tf32 (CUDA matrix products) or bf16 (autocast)")
    option("--seed", "seeds Pyro, torch and the batches", type=int)
    option("--out", "run directory")
    option(
        "--checkpoint-every", "also checkpoint every this many steps (0: epoch ends only)", type=int
    )
    p.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="trace the Pyro step once and run it as a compiled graph (TorchInductor)",
    )
    p.add_argument(
        "--cuda-graphs",
        action="store_true",
        default=None,
        help="with --compile on CUDA: capture the compiled step as a CUDA graph and replay it",
    )
    p.add_argument(
        "--autoencoder",
        action="store_true",
        default=None,
        help="train the deterministic autoencoder with the same networks",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (--epochs may grow)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument(
        "--skip-reference-check",
        action="store_true",
        help="do not compare Pyro's loss with the hand-written loss on the first batch",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace) -> TrainConfig:
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }
    for name in ("hidden", "upper_hidden"):
        if name in given:
            given[name] = tuple(given[name])
    if args.skip_reference_check:
        given["check_reference"] = False
    if args.no_progress:
        given["progress"] = False
    if not args.resume:
        return TrainConfig(**given)
    out = Path(given.get("out", DEFAULTS.out))
    try:
        saved = json.loads((out / runs.CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot resume {str(out)!r}: no readable {runs.CONFIG} ({err})") from None
    base = TrainConfig.from_dict(saved)
    changed = [k for k in given if k not in TrainConfig.RESUMABLE and given[k] != getattr(base, k)]
    if changed:
        raise ValueError(
            "a resumed run keeps its options; these differ from the run's: "
            + ", ".join(f"--{k.replace('_', '-')}" for k in changed)
        )
    return dataclasses.replace(base, **given)


def _train(args: argparse.Namespace) -> int:
    config = _config(args)
    result = train(config, resume=args.resume, overwrite=args.overwrite)
    s = result.summary
    if not s:  # a process other than rank 0 of a distributed run: rank 0 reports
        return 0
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


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="test log p(x) by importance sampling, -ELBO and active units of a run"
    )
    p.add_argument("run_dir", help="a run directory written by pyro-vae train")
    p.add_argument(
        "--num-samples",
        type=int,
        default=5000,
        help="importance samples per image, K (default: 5000)",
    )
    p.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="evaluate only the first N test images (default: all)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _evaluate(args: argparse.Namespace) -> int:
    from .run_evaluation import EVALUATION, evaluate_run

    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    r = evaluate_run(
        args.run_dir,
        args.num_samples,
        args.device,
        args.max_images,
        args.seed,
        progress=not args.no_progress,
    )
    print(
        f"test log p(x) {r['test_log_likelihood']:.2f} +- {r['test_log_likelihood_stderr']:.2f}"
        f" nats (K={r['num_samples']}, {r['num_images']} images, "
        f"{r['log_likelihood_seconds']:.1f} s); test -ELBO {r['test_neg_elbo']:.2f}; "
        f"active units {r['active_units']}/{r['z_dim']}"
    )
    keys = [
        "test_log_likelihood",
        "test_log_likelihood_stderr",
        "test_neg_elbo",
        "test_rate",
        "test_distortion",
        "active_units",
    ]
    print(json.dumps({k: round(r[k], 4) for k in keys}))
    print(f"written: {Path(args.run_dir) / EVALUATION}")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from .compare import add_arguments

    p = sub.add_parser(
        "compare", help="train one architecture with each estimator and beta; compare log p(x)"
    )
    add_arguments(p)


def _compare(args: argparse.Namespace) -> int:
    from .compare import run_from_args

    run_from_args(args)
    return 0


def _add_sample_and_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="decode draws from the prior of a trained run")
    p.add_argument("run_dir")
    p.add_argument("--num", type=int, default=100, help="how many samples (default: 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="PNG to write (default: RUN_DIR/samples.png)")
    p.add_argument("--device", default="auto")
    p = sub.add_parser("report", help="write RUN_DIR/report.html, one self-contained file")
    p.add_argument("run_dir")
    p.add_argument(
        "--refresh-figures",
        action="store_true",
        help="redraw the figures from the checkpoint first",
    )
    p.add_argument("--device", default="auto")


def _sample(args: argparse.Namespace) -> int:
    import torch

    from .plots import samples
    from .run_evaluation import load_run

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    run = load_run(args.run_dir, args.device)
    torch.manual_seed(args.seed)
    images = run.vae.sample(args.num)
    out = Path(args.out) if args.out else Path(args.run_dir) / "samples.png"
    samples(images, run.data.shape, out, per_row=min(10, args.num))
    torch.save(images.cpu(), out.with_suffix(".pt"))
    print(f"{args.num} samples from epoch {run.epoch}: {out} (tensor: {out.with_suffix('.pt')})")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import figure_names, make_figures, write_report
    from .run_evaluation import load_run

    run_dir = Path(args.run_dir)
    if not (run_dir / runs.CONFIG).exists():
        raise ValueError(f"{str(run_dir)!r} is not a run directory (no {runs.CONFIG})")
    run = None
    figures = run_dir / runs.FIGURES
    if not args.refresh_figures and figures.is_dir():
        # a run with its image figures is complete; one without checks its data's shape
        missing = [n for n in figure_names((1, 1, 1)) if not (figures / n).exists()]
        if missing:
            run = load_run(run_dir, args.device)
            shown = figure_names(run.data.shape, run.vae.conditional)
            missing = [n for n in shown if not (figures / n).exists()]
    else:
        missing = ["all"]
    if args.refresh_figures or missing:
        run = run or load_run(run_dir, args.device)
        metrics = runs.read_metrics(run_dir / runs.METRICS)
        make_figures(
            run.vae,
            run.test_x,
            run.data.test_y,
            run.data.shape,
            metrics,
            run_dir / runs.FIGURES,
            title=str(run_dir),
        )
    print(f"report: {write_report(run_dir)}")
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from .benchmark import add_arguments

    p = sub.add_parser(
        "bench", help="time pyro-vae, a hand-written loop and Pyro's example style side by side"
    )
    add_arguments(p)


def _bench(args: argparse.Namespace) -> int:
    from .benchmark import run_from_args

    return run_from_args(args)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pyro-vae", description="Variational autoencoders as Pyro models, trained by SVI."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_compare(sub)
    _add_sample_and_report(sub)
    _add_bench(sub)
    args = parser.parse_args(argv)
    command = {
        "train": _train,
        "evaluate": _evaluate,
        "compare": _compare,
        "sample": _sample,
        "report": _report,
        "bench": _bench,
    }[args.command]
    try:
        return command(args)
    except NonFiniteLoss as err:
        if args.debug:
            raise
        print(f"pyro-vae: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_NON_FINITE
    except TrainingInterrupted as stop:
        print(f"pyro-vae: {_one_line(stop)}", file=sys.stderr)
        return 128 + stop.signum
    except (ValueError, ReferenceMismatch, OSError) as err:
        if args.debug:
            raise
        print(f"pyro-vae: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("pyro-vae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
