"""Side-by-side training speed: this project, a hand-written PyTorch loop, Pyro's example style.

    pyro-vae bench --dataset fashion-mnist --rounds 5 --out runs/bench
    python scripts/benchmark.py ...            (the same)

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

Paths:
- ``pyro-vae``: this project's trainer step (sync-free ELBO, fused Adam, no param-store
  registration, data on the device), eager;
- ``pyro-vae --compile``: the same with the step traced once and compiled (CompiledStep);
- ``pyro-vae --compile --cuda-graphs`` (CUDA only): the compiled step replayed as a CUDA graph;
- ``hand-written``: the loss people write by hand (BCE + analytic KL) in a plain eager loop
  with default ``torch.optim.Adam``, the data as tensors on the device;
- ``pyro Trace_ELBO``: plain Pyro as most users write it, with the data already fast: the
  same tensors, binarization and index-gathered batches as the hand-written loop, ``SVI`` with
  eager ``Trace_ELBO`` and ``pyro.optim.Adam`` (one ``.item()`` per step, as ``SVI.step``
  returns a float);
- ``pyro example``: Pyro's VAE example style, a ``DataLoader`` over per-image samples (PIL +
  ``ToTensor``, as torchvision's MNIST datasets give them) and ``SVI`` with ``Trace_ELBO``
  and ``pyro.optim.Adam``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .data import ImageData, load_dataset

EXIT_CONTAMINATED = 3


# --- what else the machine is doing -------------------------------------------------------------


def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class LoadMonitor:
    """CPU seconds other processes used during a measured interval, as a share of the CPUs."""

    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK")
        self.cpus = os.cpu_count() or 1

    def __enter__(self) -> LoadMonitor:
        self._busy, self._own, self._wall = _busy_jiffies(), _own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        busy = (_busy_jiffies() - self._busy) / self.hz
        own = _own_cpu_seconds() - self._own
        self.other_cpu_share = max(0.0, busy - own) / (wall * self.cpus)
        self.loadavg = os.getloadavg()[0]


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:  # Linux: writing 5 resets the process's VmHWM (peak RSS)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def _proc_status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _memory_mb(device: torch.device) -> float:
    """Memory in use now: allocated by torch on CUDA, resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return _proc_status_mb("VmRSS")


def _peak_memory_mb(device: torch.device) -> float:
    """Peak since the last reset: torch's allocator on CUDA, the RSS high-water mark on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _proc_status_mb("VmHWM")


# --- the paths ----------------------------------------------------------------------------------


class PyroVAEPath:
    """This project's training step, through the Trainer (no evaluation, no files kept)."""

    def __init__(
        self, data: ImageData, opts: dict, compile: bool = False, cuda_graphs: bool = False
    ) -> None:
        from .training import Trainer

        self._tmp = tempfile.TemporaryDirectory(prefix="pyro-vae-bench-")
        config = TrainConfig(
            hidden=opts["hidden"],
            z_dim=opts["z_dim"],
            batch_size=opts["batch_size"],
            lr=opts["lr"],
            device=opts["device"],
            seed=opts["seed"],
            epochs=10**6,
            estimator=opts["estimator"],
            binarize=opts["binarize"],
            compile=compile,
            cuda_graphs=cuda_graphs,
            out=self._tmp.name,
            check_reference=False,
            progress=False,
        )
        self.trainer = Trainer(config, data, overwrite=True)
        self.build_seconds = 0.0

    def epoch(self) -> None:
        self.trainer.run_epoch()
        if self.trainer.compiled is not None:
            self.build_seconds = self.trainer.compiled.build_seconds


class HandwrittenPath:
    def __init__(self, data: ImageData, opts: dict) -> None:
        from .handwritten import HandwrittenVAE

        self.model = HandwrittenVAE(
            data,
            hidden=opts["hidden"],
            z_dim=opts["z_dim"],
            batch_size=opts["batch_size"],
            lr=opts["lr"],
            seed=opts["seed"],
            binarize=opts["binarize"],
        )

    def epoch(self) -> None:
        self.model.epoch()


def _plain_pyro_svi(data: ImageData, opts: dict, device: torch.device):
    """``SVI(Trace_ELBO)`` with ``pyro.optim.Adam`` over a fresh VAE, as Pyro's users write it."""
    import pyro
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam

    from .model import build_vae

    torch.manual_seed(opts["seed"])
    vae = build_vae(
        data.shape, hidden=opts["hidden"], z_dim=opts["z_dim"], likelihood="bernoulli"
    ).to(device)
    pyro.clear_param_store()
    return SVI(vae.model, vae.guide, Adam({"lr": opts["lr"]}), Trace_ELBO())


class PyroTraceELBOPath:
    """``SVI(Trace_ELBO)`` on tensors on the device: what the fast path is measured against."""

    def __init__(self, data: ImageData, opts: dict) -> None:
        from .data import Binarizer

        self.device = torch.device(opts["device"])
        self.svi = _plain_pyro_svi(data, opts, self.device)
        self.binarizer = Binarizer(opts["binarize"], data, seed=opts["seed"])
        self.batch_size = opts["batch_size"]

    def epoch(self) -> None:
        x_epoch = self.binarizer.train_x()
        perm = torch.randperm(x_epoch.shape[0], device=self.device)
        for start in range(0, x_epoch.shape[0], self.batch_size):
            self.svi.step(x_epoch[perm[start : start + self.batch_size]])


class _PerImageDataset(torch.utils.data.Dataset):
    """Images one at a time as torchvision's MNIST datasets serve them: uint8 -> PIL ->
    ``ToTensor``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, side: int) -> None:
        from torchvision.transforms import ToTensor

        self.images = (images.cpu() * 255).round().to(torch.uint8).reshape(-1, side, side)
        self.labels = labels.cpu()
        self.to_tensor = ToTensor()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.to_tensor(Image.fromarray(self.images[i].numpy(), mode="L")), self.labels[i]


class PyroExamplePath:
    """Pyro's examples/vae style: DataLoader + SVI(Trace_ELBO) + pyro.optim.Adam."""

    def __init__(self, data: ImageData, opts: dict) -> None:
        self.device = torch.device(opts["device"])
        self.svi = _plain_pyro_svi(data, opts, self.device)
        side = int(data.train_x.shape[1] ** 0.5)
        loader_data = _PerImageDataset(data.train_x, data.train_y, side)
        self.loader = torch.utils.data.DataLoader(
            loader_data, batch_size=opts["batch_size"], shuffle=True
        )

    def epoch(self) -> None:
        for x, _ in self.loader:
            x = x.reshape(-1, 784).to(self.device)
            self.svi.step(torch.bernoulli(x))  # binarized per batch, as the others per epoch


PATHS: dict[str, Callable[[ImageData, dict], Any]] = {
    "pyro-vae": lambda data, opts: PyroVAEPath(data, opts),
    "pyro-vae --compile": lambda data, opts: PyroVAEPath(data, opts, compile=True),
    "pyro-vae --compile --cuda-graphs": lambda data, opts: PyroVAEPath(
        data, opts, compile=True, cuda_graphs=True
    ),
    "hand-written": HandwrittenPath,
    "pyro Trace_ELBO": PyroTraceELBOPath,
    "pyro example": PyroExamplePath,
}

CUDA_ONLY = {"pyro-vae --compile --cuda-graphs"}


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
    _reset_peak_memory(device)
    before = _memory_mb(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    with LoadMonitor() as load:
        t0 = time.perf_counter()
        path.epoch()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    return seconds, _peak_memory_mb(device) - before, load


def run_benchmark(
    data: ImageData,
    paths: Sequence[str],
    rounds: int,
    opts: dict,
    max_other_load: float,
    progress: Callable[[str], None] = print,
) -> dict:
    device = torch.device(opts["device"])
    data = data.to(device)
    built = {name: PATHS[name](data, opts) for name in paths}
    results = {name: PathResult(name) for name in paths}
    for name, path in built.items():  # warm-up: allocations, caches, compilation
        seconds, _, _ = _timed_epoch(path, device)
        results[name].warmup_seconds = seconds
        results[name].build_seconds = getattr(path, "build_seconds", 0.0)
        progress(f"warm-up {name}: {seconds:.2f} s")
    order = list(paths)
    for r in range(rounds):
        for name in order:
            seconds, memory, load = _timed_epoch(built[name], device)
            res = results[name]
            res.epoch_seconds.append(seconds)
            res.peak_memory_mb.append(memory)
            res.other_cpu_share.append(load.other_cpu_share)
            progress(
                f"round {r + 1} {name}: {seconds:.3f} s, other load {load.other_cpu_share:.1%}"
            )
        order = order[1:] + order[:1]

    n_train = data.train_x.shape[0]
    summary: dict[str, Any] = {}
    clean = True
    for name, res in results.items():
        clean_epochs = [
            s
            for s, o in zip(res.epoch_seconds, res.other_cpu_share, strict=True)
            if o <= max_other_load
        ]
        path_clean = len(clean_epochs) > len(res.epoch_seconds) / 2
        clean = clean and path_clean
        median = statistics.median(clean_epochs if path_clean else res.epoch_seconds)
        summary[name] = {
            "median_epoch_seconds": median,
            "images_per_second": n_train / median,
            "epoch_peak_extra_memory_mb": max(res.peak_memory_mb),
            "epoch_seconds": res.epoch_seconds,
            "other_cpu_share": res.other_cpu_share,
            "clean_epochs": len(clean_epochs),
            "warmup_seconds": res.warmup_seconds,
            "compile_seconds": res.build_seconds,
        }
    if "hand-written" in summary:  # epoch-time ratio: below 1 is faster than by hand
        base = summary["hand-written"]["median_epoch_seconds"]
        for name in summary:
            summary[name]["vs_hand_written"] = summary[name]["median_epoch_seconds"] / base
    if "pyro Trace_ELBO" in summary:  # speed-up in images/s over plain Pyro
        base = summary["pyro Trace_ELBO"]["images_per_second"]
        for name in summary:
            summary[name]["speedup_over_trace_elbo"] = summary[name]["images_per_second"] / base
    return {"paths": summary, "clean": clean}


def _machine(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _markdown(report: dict) -> str:
    c, m = report["config"], report["machine"]
    lines = [
        f"{c['dataset']} ({c['num_train']} training images), MLP 784-"
        f"{'-'.join(map(str, c['hidden']))}-{c['z_dim']}, batch {c['batch_size']}, "
        f"{c['device']} ({m.get('gpu', m['cpu'])}, {m['torch_threads']} threads), "
        f"median of the clean epochs among {c['rounds']} alternating ones",
        "",
        "| path | s/epoch | images/s | time vs hand-written | speed-up over Trace_ELBO "
        "| epoch's extra peak memory (MB) | clean epochs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in report["paths"].items():
        lines.append(
            f"| {name} | {p['median_epoch_seconds']:.3f} | {p['images_per_second']:.0f} | "
            f"{_ratio(p.get('vs_hand_written'))} | "
            f"{_ratio(p.get('speedup_over_trace_elbo'))} | "
            f"{p['epoch_peak_extra_memory_mb']:.0f} | "
            f"{p['clean_epochs']}/{len(p['epoch_seconds'])} |"
        )
    if "log_likelihood_eval" in report:
        e = report["log_likelihood_eval"]
        lines.append(
            f"\nlog p(x), K={e['num_samples']}, {e['images']} test images: "
            f"{e['seconds']:.1f} s, peak memory {e['peak_memory_mb']:.0f} MB, "
            f"other load {e['other_cpu_share']:.1%}"
        )
    if not report["clean"]:
        lines.append("\nCONTAMINATED: other processes used the CPU during most epochs of a path.")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument(
        "--paths",
        nargs="+",
        default=None,
        choices=list(PATHS),
        help="default: all (the CUDA-graph path only on CUDA)",
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--hidden", type=int, nargs="+", default=[400])
    p.add_argument("--z-dim", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--estimator",
        default="trace",
        help="pyro-vae's estimator (trace: the same Monte Carlo ELBO as the example)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-other-load",
        type=float,
        default=0.05,
        help="share of the machine's CPU other processes may use in a clean epoch",
    )
    p.add_argument(
        "--eval-images",
        type=int,
        default=0,
        help="also time log p(x) with K=5000 on this many test images (0: skip)",
    )
    p.add_argument("--out", default="runs/bench")


def run_from_args(args: argparse.Namespace) -> int:
    from .training import resolve_device

    device = resolve_device(args.device)
    paths = args.paths or [n for n in PATHS if device.type == "cuda" or n not in CUDA_ONLY]
    if device.type != "cuda" and CUDA_ONLY & set(paths):
        print(f"error: {', '.join(sorted(CUDA_ONLY & set(paths)))} needs a CUDA device")
        return 2
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
    report = {
        "machine": _machine(device),
        "config": {
            **opts,
            "dataset": args.dataset,
            "rounds": args.rounds,
            "num_train": int(data.train_x.shape[0]),
            "max_other_load": args.max_other_load,
        },
        **result,
    }
    if args.eval_images:
        report["log_likelihood_eval"] = _time_log_likelihood(data, opts, args.eval_images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(report, indent=2) + "\n")
    text = _markdown(report)
    (out / "benchmark.md").write_text(text + "\n")
    print(text)
    return 0 if report["clean"] else EXIT_CONTAMINATED


def _time_log_likelihood(data: ImageData, opts: dict, images: int) -> dict:
    from .evaluation import log_likelihood
    from .model import build_vae

    device = torch.device(opts["device"])
    vae = build_vae(data.shape, hidden=opts["hidden"], z_dim=opts["z_dim"]).to(device)
    vae.register_params = False
    x = torch.bernoulli(data.test_x[:images].to(device))
    _reset_peak_memory(device)
    with LoadMonitor() as load:
        t0 = time.perf_counter()
        log_likelihood(vae.model, vae.guide, x, num_samples=5000)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    return {
        "images": images,
        "num_samples": 5000,
        "seconds": seconds,
        "peak_memory_mb": _peak_memory_mb(device),
        "other_cpu_share": load.other_cpu_share,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
