"""``pyro-vae evaluate RUN_DIR``: test log p(x) by importance sampling, AIS or BDMC, with
the run's -ELBO, rate, distortion and active units on the same images. (The training layer is
imported by the functions that use it: ``pyro-vae --version`` imports none of it.)"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .config_file import add_config
from .plugin_flags import add_plugin


def check_seed(seed: int) -> None:
    """A seed Pyro accepts, or a one-line error."""
    if not 0 <= seed < 2**32:  # numpy's seeds, which Pyro's set_rng_seed also sets
        raise ValueError(f"--seed must be in [0, 2**32), got {seed}")


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    from ..inference.annealing import AnnealingSettings
    from ..training.evaluate import COMPILE_FROM, METHODS
    from ..training.option_help import option_help
    from ..training.run_dir import EVALUATION

    p = sub.add_parser(
        "evaluate",
        help="test log p(x) (IS, AIS or BDMC), -ELBO, active units",
        description="Test log p(x) of a run by importance sampling (is), annealed importance "
        "sampling (ais) or, on images simulated from the model, bidirectional Monte Carlo "
        "bounds (bdmc); its test -ELBO on the same images and its active units, written to "
        f"RUN_DIR/{EVALUATION} beside what other methods measured at the same epoch.",
    )
    p.add_argument("run_dir", help="a run directory written by pyro-vae train")
    p.add_argument(
        "--method", default="is", choices=METHODS, metavar="NAME", help="how log p(x) is estimated"
    )
    p.add_argument("--num-samples", type=int, default=5000, help="is: importance samples, K")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="is: compile the importance-sampling chunks (TorchInductor): the same estimate, "
        "faster, after 20-40 s of compiling; unless given, on when images x K >= "
        f"{COMPILE_FROM:,} (never for a model with a class variable, m2 or joint); ais, bdmc: "
        "capture each HMC transition as one graph and compile it; unless given, chosen by "
        "the run's size (docs/speed.md, 'AIS')",
    )
    p.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="evaluate a fixed random subset of this many test images (default: all)",
    )
    defaults = AnnealingSettings()
    p.add_argument("--ais-steps", type=int, default=defaults.num_steps, help="ais, bdmc: T, the "
                   "annealing steps (intermediate distributions)")  # fmt: skip
    p.add_argument(
        "--chains", type=int, default=defaults.chains, help="ais, bdmc: chains per image"
    )
    p.add_argument("--leapfrog", type=int, default=defaults.leapfrog_steps,
                   help="ais, bdmc: leapfrog steps per HMC transition")  # fmt: skip
    p.add_argument("--simulate", type=int, default=defaults.simulated,
                   help="bdmc: images simulated from the model")  # fmt: skip
    p.add_argument("--ais-initial", default=defaults.initial, choices=("guide", "prior"),
                   metavar="FROM", help="ais, bdmc: chains start from q(z|x) or p(z)")  # fmt: skip
    p.add_argument("--device", default="auto", help=option_help("device"))
    p.add_argument("--seed", type=int, default=0, help="seed of the samples")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_plugin(p)
    add_config(p)


def evaluate(args: argparse.Namespace) -> int:
    from ..inference.annealing import AnnealingSettings
    from ..training import evaluate_run
    from ..training.evaluate import evaluation_line
    from ..training.run_dir import EVALUATION

    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f"--max-images must be >= 1 (or left out for all), got {args.max_images}")
    for flag in ("ais_steps", "chains", "leapfrog", "simulate"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    check_seed(args.seed)
    r = evaluate_run(
        args.run_dir,
        args.num_samples,
        args.device,
        args.max_images,
        args.seed,
        progress=not args.no_progress,
        method=args.method,
        compile=args.compile,
        annealing=AnnealingSettings(
            num_steps=args.ais_steps,
            chains=args.chains,
            leapfrog_steps=args.leapfrog,
            initial=args.ais_initial,
            compile=args.compile,
            simulated=args.simulate,
        ),
    )
    print(evaluation_line(r, args.method))
    keys = ["test_neg_elbo", "test_rate", "test_distortion", "active_units"]
    if args.method == "is":
        keys = ["test_log_likelihood", "test_log_likelihood_stderr", *keys]
    shown = {k: round(r[k], 4) for k in keys}
    if args.method != "is":
        shown[args.method] = {
            k: round(v, 4) for k, v in r[args.method].items() if isinstance(v, (int, float))
        }
    print(json.dumps(shown))
    print(f"written: {Path(args.run_dir) / EVALUATION}")
    return 0
