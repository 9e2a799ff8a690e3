"""What every study shares: the registry that makes it ``pyro-vae study NAME``, training or
reusing its runs, measuring them the same way, and the options most studies take (their help
comes from :mod:`pyro_vae.training.option_help`).

A study trains its runs under its ``--out`` directory; a finished run is reused and a stopped
one resumed, so a long study that is killed picks up where it was. With ``--replicates K`` a
study runs K times, with seeds SEED, ..., SEED+K-1, each time as it runs once, under
OUT/seed-SEED; its tables, and the figure it draws from them, give each measure's mean ± sd
over the replicates (:func:`replicated`). A new study is one module with a function decorated
by :func:`study`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..data import ImageData
from ..inference.annealing import AnnealingSettings
from ..registry import Registry
from ..training import TrainConfig, evaluate_run, read_config
from ..training.evaluate import annealing_record
from ..training.option_help import option_help
from ..training.run_dir import CONFIG, EVALUATION, SUMMARY, find_checkpoint
from ..workflow import train
from .tables import recording, write_replicated

# name -> run(args) -> exit status; each has .summary (one line) and .arguments(parser)
STUDIES: Registry[int] = Registry("study")

# a study's figure drawn again from its tables over replicates: (rows by table name, args)
Figure = Callable[[dict[str, list[dict]], argparse.Namespace], None]


def study(
    name: str,
    summary: str,
    arguments: Callable[[argparse.ArgumentParser], None],
    figure: Figure | None = None,
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register ``run(args)`` as ``pyro-vae study NAME``, with the options ``arguments`` adds
    and ``--replicates``. ``figure``: draws the study's figure from its tables over
    replicates (mean, and ± sd as error bars) into OUT; without one, each replicate's figures
    stay under OUT/seed-SEED only."""

    def decorate(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(run)
        def each_replicate(args: argparse.Namespace) -> int:
            return replicated(run, args, figure)

        def all_arguments(p: argparse.ArgumentParser) -> None:
            arguments(p)
            replicates_argument(p)

        each_replicate.summary = summary  # type: ignore[attr-defined]
        each_replicate.arguments = all_arguments  # type: ignore[attr-defined]
        return STUDIES.register(name)(each_replicate)

    return decorate


def replicates_argument(p: argparse.ArgumentParser) -> None:
    """``--replicates K``, on every study; one that repeats over its own ``--seeds`` (it has
    no ``--seed``) takes only 1."""
    seeded = any(a.dest == "seed" for a in p._actions)
    p.add_argument(
        "--replicates",
        type=at_least(1),
        default=1,
        metavar="K",
        help="run the study K times, with seeds SEED, SEED+1, ..., SEED+K-1 (each under "
        "OUT/seed-SEED), and give each measure's mean ± sd over them"
        if seeded
        else "1: this study repeats each comparison over its own --seeds",
    )


def replicated(
    run: Callable[[argparse.Namespace], int], args: argparse.Namespace, figure: Figure | None
) -> int:
    """``run(args)``; with ``args.replicates`` K > 1, ``run`` once per seed SEED, ...,
    SEED+K-1 with OUT/seed-SEED as its ``--out`` (its runs reused or resumed as in one run;
    what it prints goes to stderr), then each table it wrote, over the replicates, into OUT
    (:func:`~pyro_vae.studies.tables.write_replicated`), and ``figure`` from them."""
    count = getattr(args, "replicates", 1)
    if count == 1:
        return run(args)
    if getattr(args, "seed", None) is None:
        raise ValueError(
            f"--replicates {count}: study {getattr(args, 'study', '')} repeats each comparison "
            "over its own --seeds: list the seeds there"
        )
    out, seeds = Path(args.out), [args.seed + k for k in range(count)]
    written = []
    for seed in seeds:
        announce(f"replicate {seed - args.seed + 1} of {count}: seed {seed}")
        one = vars(args) | {"seed": seed, "out": str(out / f"seed-{seed}"), "replicates": 1}
        with recording() as tables, contextlib.redirect_stdout(sys.stderr):
            status = run(argparse.Namespace(**one))
        if status:
            return status
        written.append(tables)
    merged, texts = {}, []
    for name in written[0]:
        if any(name not in tables for tables in written):
            raise ValueError(f"{name}: not every replicate wrote this table")
        merged[name], text = write_replicated(out, [t[name] for t in written], seeds)
        texts.append(text)
    if figure is not None:
        figure(merged, args)
    print("\n".join(texts))
    return 0


def train_or_reuse(config: TrainConfig, data: ImageData | None = None) -> dict[str, Any]:
    """The summary of the run in ``config.out``: reused if finished, resumed if stopped,
    trained otherwise. A directory holding a run with other options is an error."""
    out = Path(config.out)
    if (out / CONFIG).exists():
        earlier = read_config(out)
        changed = config.differences(earlier)
        if config.epochs != earlier.epochs:
            changed.append(f"epochs: {config.epochs} != {earlier.epochs}")
        if changed:
            raise ValueError(
                f"{str(out)!r} holds a run with other options ({'; '.join(changed)})"
                ": choose another --out"
            )
    if (out / SUMMARY).exists():
        announce(f"{out}: finished before, reused")
        return json.loads((out / SUMMARY).read_text())
    # stopped after a checkpoint: resume; before the first one: start that run again
    started, resumable = (out / CONFIG).exists(), find_checkpoint(out).exists()
    announce(f"{out}: {'resuming' if resumable else 'training'} ({config.epochs} epochs)")
    return train(config, data, resume=resumable, overwrite=started and not resumable).summary


def announce(message: str) -> None:
    """One line of a study's progress (which run it is on), on stderr like the runs' own."""
    print(f"study: {message}", file=sys.stderr, flush=True)


def evaluate_or_reuse(
    run_dir: Path,
    num_samples: int,
    data: ImageData | None = None,
    max_images: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The run's evaluation.json if it was made with these settings, else a new one."""
    path = Path(run_dir) / EVALUATION
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("num_samples") == num_samples and saved.get("max_images") == max_images:
            return saved
    announce(f"{run_dir}: test log p(x), K={num_samples}")
    return evaluate_run(run_dir, num_samples, "auto", max_images, data=data, progress=progress)


def ais_or_reuse(
    run_dir: Path,
    max_images: int | None,
    annealing: AnnealingSettings,
    data: ImageData | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The run's AIS log p(x) (the ``ais`` block of evaluation.json) with these settings, on
    the same images as its IS estimate; measured unless it was before."""
    path = Path(run_dir) / EVALUATION
    saved = json.loads(path.read_text()) if path.exists() else {}
    wanted = annealing_record(annealing, "ais")
    # a block recorded before a setting was written was measured at its default
    default = annealing_record(AnnealingSettings(), "ais")
    ais = saved.get("ais") or {}
    same = all(ais.get(k, default[k]) == v for k, v in wanted.items())
    if saved.get("max_images") == max_images and same:
        return ais
    announce(f"{run_dir}: test log p(x) by AIS, T={annealing.num_steps}")
    result = evaluate_run(
        run_dir, 0, "auto", max_images, data=data, progress=progress, method="ais",
        annealing=annealing,
    )  # fmt: skip
    return result["ais"]


def train_and_measure(
    config: TrainConfig,
    data: ImageData,
    num_samples: int,
    max_images: int | None = None,
    annealing: AnnealingSettings | None = None,
) -> dict[str, Any]:
    """Train (or reuse) the run ``config`` describes and measure it: the table fields every
    comparison shares (test log p(x) with K = ``num_samples`` and its SE, test -ELBO on the same
    images, active units, seconds per epoch, rate, distortion, the run directory); with
    ``annealing``, also AIS log p(x) on the same images and IS - AIS."""
    summary = train_or_reuse(config, data)
    e = evaluate_or_reuse(Path(config.out), num_samples, data, max_images, config.progress)
    measured = {
        "test_neg_elbo": e["test_neg_elbo"],  # on the images log p(x) was measured on
        "test_log_likelihood": e["test_log_likelihood"],
        "test_log_likelihood_stderr": e["test_log_likelihood_stderr"],
        "active_units": e["active_units"],
        "z_dim": e["z_dim"],
        "seconds_per_epoch": summary["seconds_per_epoch"],
        "test_rate": summary["test_rate"],
        "test_distortion": summary["test_distortion"],
        "run": config.out,
    }
    if annealing is not None:
        ais = ais_or_reuse(Path(config.out), max_images, annealing, data, config.progress)
        measured["test_log_likelihood_ais"] = ais["test_log_likelihood"]
        measured["test_log_likelihood_ais_stderr"] = ais["test_log_likelihood_stderr"]
        measured["is_minus_ais"] = e["test_log_likelihood"] - ais["test_log_likelihood"]
    return measured


def study_metadata(
    dataset: str, epochs: int, num_samples: int, max_images: int | None
) -> dict[str, Any]:
    """What a comparison table was measured with (the header of its JSON and Markdown)."""
    return {
        "dataset": dataset,
        "epochs": epochs,
        "num_samples": num_samples,
        "eval_images": max_images or "all",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


# --- the options most studies take ------------------------------------------------------------


def run_arguments(
    p: argparse.ArgumentParser,
    out: str,
    epochs: int,
    z_dim: int,
    hidden: Sequence[int] = (400,),
    *,
    where_they_apply: bool = False,
) -> None:
    """The data, the network's size, the length of training, where runs go.
    ``where_they_apply``: ``--z-dim`` and ``--hidden`` default to None, for a study whose model
    may be the user's (a factory takes them only if it has them as options): the study gives
    its sizes where they apply (:func:`sizes_where_they_apply`)."""
    where = " where the model takes them" if where_they_apply else ""
    p.add_argument("--dataset", default="mnist-sample", help=option_help("dataset"))
    p.add_argument("--data-dir", default=None, help=option_help("data_dir"))
    p.add_argument("--epochs", type=int, default=epochs, help="training epochs of each run")
    p.add_argument(
        "--z-dim",
        type=int,
        default=None if where_they_apply else z_dim,
        help=f"latent dimensions ({z_dim}{where})" if where else "latent dimensions",
    )
    p.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=None if where_they_apply else list(hidden),
        metavar="N",
        help=option_help("hidden") + (f" ({' '.join(map(str, hidden))}{where})" if where else ""),
    )
    p.add_argument("--seed", type=int, default=0, help="the seed of every run")
    p.add_argument("--device", default="auto", help=option_help("device"))
    p.add_argument("--out", default=out, help="where the runs and tables go")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def sizes_where_they_apply(
    given: dict[str, Any], defaults: dict[str, Any], **options: Any
) -> dict[str, Any]:
    """The sizes a study gives its runs: each one ``given`` (a flag left out is None), and each
    of its ``defaults`` left out that applies to the run ``options`` describe (``z_dim`` to a
    factory that takes it; ``hidden`` to the MLP). A size given where it does not apply is the
    config's to refuse."""
    chosen = {k: v for k, v in given.items() if v is not None}
    left_out = [name for name in defaults if name not in chosen]
    if left_out:
        probe = TrainConfig.of(**options)
        chosen |= {name: defaults[name] for name in left_out if probe.applies(name)}
    return chosen


def at_least(minimum: float, kind: type = int) -> Callable[[str], float]:
    """An argparse type: a finite number of ``kind`` that is at least ``minimum`` (a study's
    own counts and shares, checked before any work starts)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a finite number >= {minimum:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def measure_arguments(p: argparse.ArgumentParser) -> None:
    """How test log p(x) is measured."""
    p.add_argument(
        "--num-samples",
        type=at_least(1),
        default=5000,
        help="importance samples per image, K, for test log p(x)",
    )
    p.add_argument(
        "--max-eval-images",
        type=at_least(1),
        default=None,
        help="measure log p(x) on a fixed random subset of this many test images (default: all)",
    )


def chosen_options(args: argparse.Namespace) -> dict[str, Any]:
    """The study's options as the command line set them, for its table's JSON (without
    argparse's dispatch entries, nor ``--replicates``: a table over replicates gives it)."""
    return {k: v for k, v in vars(args).items() if k not in ("func", "command", "replicates")}


def base_config(args: argparse.Namespace) -> TrainConfig:
    """The run every setting of a study starts from, as ``run_arguments`` gave it."""
    return TrainConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        epochs=args.epochs,
        z_dim=args.z_dim,
        hidden=tuple(args.hidden),
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
