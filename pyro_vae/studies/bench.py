"""Side-by-side training speed: this project, a hand-written PyTorch loop, Pyro's example style.

    pyro-vae study bench --dataset fashion-mnist --rounds 5 --out runs/bench

Every path trains the same MLP (784-400-50 by default) with Adam on the same data, batch size
and device. After one untimed warm-up epoch each, the paths take turns, one timed epoch per
turn, for ``rounds`` rounds, the order rotating each round, so that slow drift of the machine
falls on all of them alike; each path's figure is the median. Per epoch it records wall
seconds, images per second, peak memory (RSS high-water mark on CPU, reset before each epoch;
``max_memory_allocated`` on CUDA) and the CPU time that *other* processes used meanwhile. An
epoch during which other processes used more than ``--max-other-load`` of the machine's CPU
is contaminated; a path whose median is not backed by a majority of clean epochs makes the
whole report "contaminated", and the command exits with status 3 instead of reporting it as
clean.

Paths (``--paths``; :mod:`pyro_vae.studies.bench_paths`):
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
  and ``pyro.optim.Adam``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import param_store
from ..data import ImageData, load_dataset
from ..inference import log_likelihood
from ..model import build_vae
from ..training import resolve_device
from ..training.devices import synchronize
from ..training.run_dir import write_json, write_text
from .bench_paths import CUDA_ONLY, PATHS
from .command_help import train_help
from .harness import at_least, study
from .machine import LoadMonitor, machine_info, memory_mb, peak_memory_mb, reset_peak_memory
from .tables import markdown_table

EXIT_CONTAMINATED = 3
BASELINES = {"vs_hand_written": "hand-written", "speedup_over_trace_elbo": "pyro-trace-elbo"}


@dataclass
class PathResult:
    name: str
    epoch_seconds: list[float] = field(default_factory=list)
    peak_memory_mb: list[float] = field(default_factory=list)
    other_cpu_share: list[float] = field(default_factory=list)
    warmup_seconds: float = 0.0
    build_seconds: float = 0.0


def _timed_epoch(path: Any, device: torch.device) -> tuple[float, float, LoadMonitor]:
    """Seconds, the memory the epoch needed beyond what was in use when it began (MB; all
    paths share one process, so totals would mostly measure each other), and the load."""
    reset_peak_memory(device)
    before = memory_mb(device)
    synchronize(device)
    with LoadMonitor() as load:
        t0 = time.perf_counter()
        path.epoch()
        synchronize(device)
        seconds = time.perf_counter() - t0
    return seconds, peak_memory_mb(device) - before, load


def _alternate(
    built: dict[str, Any], rounds: int, device: torch.device, progress: Callable[[str], None]
) -> dict[str, PathResult]:
    """One untimed warm-up epoch per path, then ``rounds`` rounds of one timed epoch each,
    the order rotating every round so that drift of the machine falls on all alike."""
    results = {name: PathResult(name) for name in built}
    for name, path in built.items():  # warm-up: allocations, caches, compilation
        seconds, _, _ = _timed_epoch(path, device)
        results[name].warmup_seconds = seconds
        results[name].build_seconds = getattr(path, "build_seconds", 0.0)
        progress(f"warm-up {name}: {seconds:.2f} s")
    order = list(built)
    for r in range(rounds):
        for name in order:
            seconds, memory, load = _timed_epoch(built[name], device)
            res = results[name]
            res.epoch_seconds.append(seconds)
            res.peak_memory_mb.append(memory)
            res.other_cpu_share.append(load.other_cpu_share)
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
        "epoch_seconds": res.epoch_seconds,
        "other_cpu_share": res.other_cpu_share,
        "clean_epochs": len(clean_epochs),
        "warmup_seconds": res.warmup_seconds,
        "compile_seconds": res.build_seconds,
        "clean": clean,
    }


def run_benchmark(
    data: ImageData,
    paths: Sequence[str],
    rounds: int,
    opts: dict,
    max_other_load: float,
    progress: Callable[[str], None] = print,
) -> dict:
    """Every path timed side by side; ratios to the hand-written loop (time: below 1 is
    faster) and to plain Pyro (speed-up in images/s), where those paths ran."""
    device = torch.device(opts["device"])
    data = data.to(device)
    built = {name: PATHS[name][1](data, opts) for name in paths}
    results = _alternate(built, rounds, device, progress)
    n_train = data.train_x.shape[0]
    summary = {n: _summarize(r, n_train, max_other_load) for n, r in results.items()}
    clean = all(s.pop("clean") for s in summary.values())
    if "hand-written" in summary:
        base = summary["hand-written"]["median_epoch_seconds"]
        for s in summary.values():
            s["vs_hand_written"] = s["median_epoch_seconds"] / base
    if "pyro-trace-elbo" in summary:
        base = summary["pyro-trace-elbo"]["images_per_second"]
        for s in summary.values():
            s["speedup_over_trace_elbo"] = s["images_per_second"] / base
    return {"paths": summary, "clean": clean}


def _ratio(key: str) -> Callable[[dict], str]:
    return lambda r: "–" if r.get(key) is None else f"{r[key]:.2f}x"


def _markdown(report: dict) -> str:
    c, m = report["config"], report["machine"]
    header = (
        f"{c['dataset']} ({c['num_train']} training images), MLP 784-"
        f"{'-'.join(map(str, c['hidden']))}-{c['z_dim']}, batch {c['batch_size']}, "
        f"{c['device']} ({m.get('gpu', m['cpu'])}, {m['torch_threads']} threads), "
        f"median of the clean epochs among {c['rounds']} alternating ones"
    )
    rows = [{"path": PATHS[name][0], **p} for name, p in report["paths"].items()]
    text = markdown_table(
        header,
        [
            ("path", "path", ""),
            ("median_epoch_seconds", "s/epoch", ".3f"),
            ("images_per_second", "images/s", ".0f"),
            ("", "time vs hand-written", _ratio("vs_hand_written")),
            ("", "speed-up over Trace_ELBO", _ratio("speedup_over_trace_elbo")),
            ("epoch_peak_extra_memory_mb", "epoch's extra peak memory (MB)", ".0f"),
            ("", "clean epochs", lambda r: f"{r['clean_epochs']}/{len(r['epoch_seconds'])}"),
        ],
        rows,
    )
    if "log_likelihood_eval" in report:
        e = report["log_likelihood_eval"]
        text += (
            f"\nlog p(x), K={e['num_samples']}, {e['images']} test images: "
            f"{e['seconds']:.1f} s, peak memory {e['peak_memory_mb']:.0f} MB, "
            f"other load {e['other_cpu_share']:.1%}\n"
        )
    if not report["clean"]:
        text += "\nCONTAMINATED: other processes used the CPU during most epochs of a path.\n"
    return text


def _time_log_likelihood(data: ImageData, opts: dict, images: int) -> dict:
    """Seconds and peak memory of log p(x) with K = 5000 on ``images`` test images."""
    device = torch.device(opts["device"])
    vae = build_vae(data.shape, hidden=opts["hidden"], z_dim=opts["z_dim"]).to(device)
    x = torch.bernoulli(data.test_x[:images].to(device))
    reset_peak_memory(device)
    with LoadMonitor() as load, param_store.off():
        t0 = time.perf_counter()
        log_likelihood(vae.model, vae.guide, x, num_samples=5000)
        synchronize(device)
        seconds = time.perf_counter() - t0
    return {
        "images": images,
        "num_samples": 5000,
        "seconds": seconds,
        "peak_memory_mb": peak_memory_mb(device),
        "other_cpu_share": load.other_cpu_share,
    }


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="fashion-mnist", help=train_help("dataset"))
    p.add_argument("--data-dir", default=None, help=train_help("data_dir"))
    p.add_argument(
        "--paths",
        nargs="+",
        default=None,
        choices=list(PATHS),
        metavar="PATH",
        help=f"the paths to time, all by default ({', '.join(sorted(CUDA_ONLY))} only on CUDA)",
    )
    p.add_argument("--rounds", type=at_least(1), default=5, help="timed epochs per path")
    p.add_argument(
        "--hidden", type=int, nargs="+", default=[400], metavar="N", help=train_help("hidden")
    )
    p.add_argument("--z-dim", type=int, default=50, help="latent dimensions")
    p.add_argument("--batch-size", type=int, default=128, help=train_help("batch_size"))
    p.add_argument("--lr", type=float, default=1e-3, help=train_help("lr"))
    p.add_argument(
        "--estimator",
        default="trace",
        help=train_help(
            "estimator", "the pyro-vae paths' objective (trace: the Pyro paths' Trace_ELBO)"
        ),
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="seeds the networks and the batches")
    p.add_argument(
        "--max-other-load",
        type=at_least(0, float),
        default=0.05,
        help="share of the machine's CPU other processes may use in a clean epoch",
    )
    p.add_argument(
        "--eval-images",
        type=at_least(0),
        default=0,
        help="also time log p(x) with K=5000 on this many test images; 0 skips it",
    )
    p.add_argument("--out", default="runs/bench", help="where the timings go")


@study("bench", "training speed side by side: pyro-vae, by hand, plain Pyro", _arguments)
def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    paths = args.paths or [n for n in PATHS if device.type == "cuda" or n not in CUDA_ONLY]
    if device.type != "cuda" and CUDA_ONLY & set(paths):
        raise ValueError(f"{', '.join(sorted(CUDA_ONLY & set(paths)))} needs a CUDA device")
    data = load_dataset(args.dataset, args.data_dir)
    opts = {
        "hidden": tuple(args.hidden),
        "z_dim": args.z_dim,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "device": str(device),
        "seed": args.seed,
        "estimator": args.estimator,
        "binarize": "dynamic",
    }
    result = run_benchmark(data, paths, args.rounds, opts, args.max_other_load)
    config = {**opts, "dataset": args.dataset, "rounds": args.rounds}
    config |= {"num_train": int(data.train_x.shape[0]), "max_other_load": args.max_other_load}
    report = {"machine": machine_info(device), "config": config, **result}
    if args.eval_images:
        report["log_likelihood_eval"] = _time_log_likelihood(data, opts, args.eval_images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "benchmark.json", report, sort_keys=False)  # the paths in the order run
    text = _markdown(report)
    write_text(out / "benchmark.md", text)
    print(text)
    return 0 if report["clean"] else EXIT_CONTAMINATED
