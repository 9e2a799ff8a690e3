"""Side-by-side training speed: this project, a hand-written PyTorch loop, Pyro's example style.

    python -m benchmarks.compare --dataset fashion-mnist --rounds 5 --out benchmarks/results

(from the repository root, with pyro-vae installed; ``pip install -e '.[numpyro]'`` adds the
NumPyro paths).

Every path trains the same MLP (784-400-50 by default) with Adam on the same data, batch size
and device. After one untimed warm-up epoch each, the paths take turns, one timed epoch per
turn, for ``rounds`` rounds, the order rotating each round, so that slow drift of the machine
falls on all of them alike; each path's figure is the median. Per epoch it records wall
seconds, images per second, peak memory (RSS high-water mark on CPU, reset before each epoch;
``max_memory_allocated`` on CUDA), the cores this process kept busy (its CPU seconds per wall
second: XLA's thread pool, for one, is not torch's) and the CPU time that *other* processes
used meanwhile. An epoch during which other processes used more than ``--max-other-load`` of
the machine's CPU is contaminated; a path whose median is not backed by a majority of clean
epochs makes the whole report "contaminated", and the command exits with status 3 instead of
reporting it as clean.

Paths (``--paths``; :mod:`benchmarks.paths`):
- ``pyro-vae``: this project's trainer step (sync-free ELBO, fused Adam, no param-store
  registration, data on the device), eager;
- ``pyro-vae-compile``: the same with the step traced once and compiled (CompiledStep);
- ``pyro-vae-cuda-graphs`` (CUDA only): the compiled step replayed as a CUDA graph;
- ``hand-written``: the loss people write by hand (BCE + analytic KL) in a plain eager loop
  with default ``torch.optim.Adam``, the data as tensors on the device;
- ``pyro-trace-elbo``: plain Pyro as most users write it, with the data already fast: the
  same tensors, binarization and index-gathered batches as the hand-written loop, ``SVI`` with
  eager ``Trace_ELBO`` and ``pyro.optim.Adam`` (one ``.item()`` per step, as ``SVI.step``
  returns a float);
- ``pyro-example``: Pyro's VAE example style, a ``DataLoader`` over per-image samples (PIL +
  ``ToTensor``, as torchvision's MNIST datasets give them) and ``SVI`` with ``Trace_ELBO``
  and ``pyro.optim.Adam``;
- ``numpyro-scan``, ``numpyro-step`` (CPU; JAX and NumPyro, ``pip install
  'pyro-vae[numpyro]'``): NumPyro's ``SVI(Trace_ELBO)``, a whole epoch in one jitted
  ``lax.scan``, or a jitted ``svi.update`` per batch (:mod:`benchmarks.numpyro_paths`).

``--estimator`` (with ``--particles``, ``--grad``) sets the pyro-vae paths' objective; for
``iwae`` the hand-written path runs the vectorised IWAE_K loss with the same gradient
estimator. The Pyro and NumPyro paths always train by Trace_ELBO; the NumPyro ones are left
out (with a line that says why) when the objective is not a one-sample ELBO, or JAX is
missing, and refused when named.

Before the paths, the run measures the machine's float32 matmul rate (the best of a few
2048 x 2048 products); each path's epoch is counted in matrix-product FLOPs
(:func:`~benchmarks.paths.step_matmul_flops`), so the table gives the GFLOP/s it
reached and their share of that peak.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pyro_vae.cli.help import CommandParser
from pyro_vae.data import ImageData, load_dataset
from pyro_vae.inference import IWAE_GRADIENTS
from pyro_vae.studies.harness import at_least
from pyro_vae.training import resolve_device
from pyro_vae.training.denormals import DENORMALS, flushed_denormals
from pyro_vae.training.devices import synchronize
from pyro_vae.training.option_help import option_help
from pyro_vae.training.run_dir import write_json, write_text

from . import numpyro_paths
from .log_likelihood_eval import eval_arguments, time_log_likelihood
from .machine import (
    LoadMonitor,
    machine_block,
    machine_line,
    memory_mb,
    peak_memory_mb,
    process_cpu_seconds,
    reset_peak_memory,
)
from .markdown_report import markdown_report
from .paths import (
    CUDA_ONLY,
    DEFAULT_PARTICLES,
    PATHS,
    choose_paths,
    epoch_matmul_flops,
    estimator_options,
)

EXIT_USAGE, EXIT_CONTAMINATED = 2, 3
# ratio -> the path it is taken to: time ratios (below 1 is faster), except the speed-ups
BASELINES = {
    "vs_hand_written": "hand-written",
    "speedup_over_trace_elbo": "pyro-trace-elbo",
    "vs_numpyro_scan": "numpyro-scan",
}
SPEEDUPS = {"speedup_over_trace_elbo"}


@dataclass
class PathResult:
    name: str
    epoch_seconds: list[float] = field(default_factory=list)
    peak_memory_mb: list[float] = field(default_factory=list)
    other_cpu_share: list[float] = field(default_factory=list)
    cores_busy: list[float] = field(default_factory=list)  # own CPU seconds / wall seconds
    warmup_seconds: float = 0.0
    build_seconds: float = 0.0


def _timed_epoch(
    path: Any, device: torch.device, flush: bool
) -> tuple[float, float, LoadMonitor, float]:
    """Seconds, the memory the epoch needed beyond what was in use when it began (MB; all
    paths share one process, so totals would mostly measure each other), the load, and the
    cores the process kept busy (its CPU seconds per second). ``flush``: denormal floats as
    zero on every thread (each torch path alike; JAX flushes them always)."""
    reset_peak_memory(device)
    before = memory_mb(device)
    synchronize(device)
    with LoadMonitor() as load, flushed_denormals(flush):
        t0, cpu0 = time.perf_counter(), process_cpu_seconds()
        path.epoch()
        synchronize(device)
        seconds = time.perf_counter() - t0
        cores = (process_cpu_seconds() - cpu0) / seconds
    return seconds, peak_memory_mb(device) - before, load, cores


def _alternate(
    built: dict[str, Any],
    rounds: int,
    device: torch.device,
    flush: bool,
    progress: Callable[[str], None],
) -> dict[str, PathResult]:
    """One untimed warm-up epoch per path, then ``rounds`` rounds of one timed epoch each,
    the order rotating every round so that drift of the machine falls on all alike."""
    results = {name: PathResult(name) for name in built}
    for name, path in built.items():  # warm-up: allocations, caches, compilation
        seconds, *_ = _timed_epoch(path, device, flush)
        results[name].warmup_seconds = seconds
        results[name].build_seconds = getattr(path, "build_seconds", 0.0)
        progress(f"warm-up {name}: {seconds:.2f} s")
    order = list(built)
    for r in range(rounds):
        for name in order:
            seconds, memory, load, cores = _timed_epoch(built[name], device, flush)
            res = results[name]
            res.epoch_seconds.append(seconds)
            res.peak_memory_mb.append(memory)
            res.other_cpu_share.append(load.other_cpu_share)
            res.cores_busy.append(cores)
            share = load.other_cpu_share
            progress(f"round {r + 1} {name}: {seconds:.3f} s, other load {share:.1%}")
        order = order[1:] + order[:1]
    return results


def _summarize(res: PathResult, n_train: int, max_other_load: float) -> dict[str, Any]:
    """A path's median over its clean epochs (all of them if most were not clean)."""
    clean_epochs = [
        s
        for s, o in zip(res.epoch_seconds, res.other_cpu_share, strict=True)
        if o <= max_other_load
    ]
    clean = len(clean_epochs) > len(res.epoch_seconds) / 2
    median = statistics.median(clean_epochs if clean else res.epoch_seconds)
    return {
        "median_epoch_seconds": median,
        "images_per_second": n_train / median,
        "epoch_peak_extra_memory_mb": max(res.peak_memory_mb),
        "cores_busy": statistics.median(res.cores_busy),
        "epoch_seconds": res.epoch_seconds,
        "other_cpu_share": res.other_cpu_share,
        "clean_epochs": len(clean_epochs),
        "warmup_seconds": res.warmup_seconds,
        "compile_seconds": res.build_seconds,
        "clean": clean,
    }


def _add_rates(summary: dict, built: dict, data: ImageData, opts: dict, peak: float) -> None:
    """Each path's matrix-product FLOPs per epoch, the GFLOP/s its median epoch reached and
    their share of the matmul peak; the ratios to the baselines that ran."""
    n_train, data_dim = data.train_x.shape
    for name, s in summary.items():
        samples = getattr(built[name], "samples_per_image", 1)
        sizes = (data_dim, opts["hidden"], opts["z_dim"], samples)
        s["epoch_matmul_flops"] = epoch_matmul_flops(n_train, opts["batch_size"], *sizes)
        s["achieved_gflops"] = s["epoch_matmul_flops"] / s["median_epoch_seconds"] / 1e9
        s["fraction_of_matmul_peak"] = s["achieved_gflops"] / peak
    for key, base in BASELINES.items():
        if base in summary:
            seconds = summary[base]["median_epoch_seconds"]
            for s in summary.values():
                ratio = s["median_epoch_seconds"] / seconds
                s[key] = 1 / ratio if key in SPEEDUPS else ratio


def run_benchmark(
    data: ImageData,
    paths: Sequence[str],
    rounds: int,
    opts: dict,
    max_other_load: float,
    progress: Callable[[str], None] = print,
) -> dict:
    """The machine's matmul peak, then every path timed side by side; ratios to the
    hand-written loop and to numpyro-scan (time: below 1 is faster) and to plain Pyro
    (speed-up in images/s), where those paths ran."""
    device = torch.device(opts["device"])
    machine = machine_block(device)["machine"]
    progress(f"machine: {machine_line(machine)}")
    data = data.to(device)
    built = {name: PATHS[name][1](data, opts) for name in paths}
    if set(numpyro_paths.PATH_NAMES) & set(built):
        machine |= numpyro_paths.versions()
    results = _alternate(built, rounds, device, opts.get("denormals") == "flush", progress)
    n_train = data.train_x.shape[0]
    summary = {n: _summarize(r, n_train, max_other_load) for n, r in results.items()}
    clean = all(s.pop("clean") for s in summary.values())
    _add_rates(summary, built, data, opts, machine["matmul_peak_gflops"])
    return {"machine": machine, "paths": summary, "clean": clean}


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="fashion-mnist", help=option_help("dataset"))
    p.add_argument("--data-dir", default=None, help=option_help("data_dir"))
    p.add_argument(
        "--paths",
        nargs="+",
        default=None,
        choices=list(PATHS),
        metavar="PATH",
        help=f"the paths to time, all that can run by default ({', '.join(sorted(CUDA_ONLY))} "
        f"only on CUDA, {', '.join(numpyro_paths.PATH_NAMES)} with JAX on the CPU)",
    )
    p.add_argument("--rounds", type=at_least(1), default=5, help="timed epochs per path")
    p.add_argument(
        "--hidden", type=int, nargs="+", default=[400], metavar="N", help=option_help("hidden")
    )
    p.add_argument("--z-dim", type=int, default=50, help="latent dimensions")
    p.add_argument("--batch-size", type=int, default=128, help=option_help("batch_size"))
    p.add_argument("--lr", type=float, default=1e-3, help=option_help("lr"))
    p.add_argument(
        "--estimator",
        default="trace",
        help=option_help(
            "estimator", "the pyro-vae paths' objective (trace: the Pyro paths' Trace_ELBO)"
        ),
    )
    p.add_argument(
        "--particles",
        type=at_least(1),
        default=DEFAULT_PARTICLES,
        metavar="K",
        help="samples per image of the importance-weighted estimators (the pyro-vae paths; "
        "the hand-written one for iwae)",
    )
    p.add_argument(
        "--grad",
        default="standard",
        choices=IWAE_GRADIENTS,
        metavar="GRAD",
        help="iwae, miwae: the gradient estimator (hand-written for iwae)",  # (choices shown)
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--denormals",
        default="flush",
        choices=DENORMALS,
        metavar="MODE",
        help="flush: floats under 1.2e-38 read and written as 0 on every CPU thread, for "
        "every torch path alike (JAX flushes them always); keep: IEEE",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the networks and the batches")
    p.add_argument(
        "--max-other-load",
        type=at_least(0, float),
        default=0.05,
        help="share of the machine's CPU other processes may use in a clean epoch",
    )
    eval_arguments(p)
    p.add_argument("--out", default="benchmarks/results", help="where benchmark.json and .md go")


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    opts = {
        "hidden": tuple(args.hidden),
        "z_dim": args.z_dim,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "device": str(device),
        "seed": args.seed,
        "estimator": args.estimator,
        **estimator_options(args.estimator, args.particles, args.grad),
        "binarize": "dynamic",
        "denormals": args.denormals,
    }
    paths, skipped = choose_paths(args.paths, opts)
    for line in skipped:
        print(line)
    data = load_dataset(args.dataset, args.data_dir)
    result = run_benchmark(data, paths, args.rounds, opts, args.max_other_load)
    config = {**opts, "dataset": args.dataset, "rounds": args.rounds}
    config |= {"num_train": int(data.train_x.shape[0]), "max_other_load": args.max_other_load}
    report = {"machine": result.pop("machine"), "config": config, **result, "skipped": skipped}
    if args.eval_images:
        peak = report["machine"]["matmul_peak_gflops"]
        with flushed_denormals(args.denormals == "flush"):
            timed = time_log_likelihood(data, opts, args.eval_images, peak, args.eval_paths)
        report["log_likelihood_eval"] = timed
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "benchmark.json", report, sort_keys=False)  # the paths in the order run
    text = markdown_report(report)
    write_text(out / "benchmark.md", text)
    print(text)
    return 0 if report["clean"] else EXIT_CONTAMINATED


def parser() -> CommandParser:
    """The benchmark's command line, its help showing every default."""
    p = CommandParser(
        prog="python -m benchmarks.compare",
        description="training speed side by side: pyro-vae, by hand, plain Pyro, NumPyro",
    )
    _arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.compare [OPTIONS]``: time the paths, write the report."""
    args = parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as err:  # a path that cannot run here, data that is missing
        print(f"python -m benchmarks.compare: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
