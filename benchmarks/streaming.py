"""Streaming user data from disk: the memory it takes and the speed it keeps.

Each run is a fresh child process training through ``pyro_vae.training.fit`` (no figures);
a thread here reads ``RssAnon`` of it and of every process under it (the ``DataLoader``
workers) every 0.2 s, and ``Pss_Anon`` every 10 s (see :func:`sample`). ``memory``: one epoch
of the default MLP on an .npy of R rows x 784 uint8 (3,000,000: 2.35 GB) streamed by
``--workers`` processes (0: read in the trainer, the default for a memory map), then on its
first S rows held on
the device: peak memory, images/s of both and their ratio. ``images``: N RGB 64x64 images
(100,000) as a folder of PNG files and as one .npy, each streamed to the conv net for K steps:
the share of the step time spent waiting for batches. The data are made once, deterministically,
under ``--workdir`` and reused.

    python -m benchmarks.streaming --case memory --workdir /tmp/pyro_vae_streaming
    python -m benchmarks.streaming --case images --workdir /tmp/pyro_vae_streaming
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.machine import machine_block, machine_line
from benchmarks.memory_sampler import memory_report, sample
from pyro_vae.training import Observer, TrainConfig, TrainingInterrupted, fit

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 784  # a row of the memory case: one 28 x 28 uint8 image
CHUNK_ROWS = 65_536  # rows made (or copied) at a time; row k's values depend on k alone
SIDE, CHUNK_IMAGES = 64, 500
GB = 1e9
TARGETS = {"rss_anon_sum_peak_gb": 1.5, "streamed_to_resident": 0.8, "data_wait_share": 0.1}
COPY_ON_WRITE = (
    "RssAnon counts every anonymous page a process maps, shared or not: summed over the trainer "
    "and its workers it counts a page shared by several of them once per process (workers are "
    "spawned, so they share little beyond what the kernel shares). The summed Pss_Anon divides "
    "each shared page among the processes sharing it: the memory the run really holds."
)

# --- the data ----------------------------------------------------------------------------------


def _npy_ready(path: Path, shape: tuple[int, ...]) -> bool:
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return array.shape == shape and array.dtype == np.uint8


def _write_npy(path: Path, shape: tuple[int, ...], blocks: Iterable[np.ndarray]) -> None:
    """``blocks`` (consecutive rows, in order) written as the uint8 .npy ``path``, a chunk at a
    time through a memory map; named ``path`` only once complete."""
    partial = path.with_name(path.name + ".partial")
    out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
    start = 0
    for block in blocks:
        out[start : start + len(block)] = block
        start += len(block)
    assert start == shape[0], (start, shape)
    out.flush()
    del out
    partial.replace(path)


def row_file(path: Path, rows: int, seed: int) -> Path:
    """The first ``rows`` of the rows of 784 uniform uint8 values that ``seed`` makes, as the
    .npy ``path``, made a chunk at a time (or reused). A row depends on its index and ``seed``
    alone: a file of fewer rows holds the first rows of a longer one."""
    if not _npy_ready(path, (rows, WIDTH)):
        starts = range(0, rows, CHUNK_ROWS)
        draw = (np.random.default_rng([seed, k]).integers(0, 256, (CHUNK_ROWS, WIDTH), np.uint8)
                [: rows - start] for k, start in enumerate(starts))  # fmt: skip
        _write_npy(path, (rows, WIDTH), draw)
    return path


def smooth_image(i: int, seed: int) -> np.ndarray:
    """Image ``i``: (64, 64, 3) uint8, three octaves of bicubic-upsampled uniform noise (4, 8
    and 16 cells a side, halving in amplitude): smooth, so PNG compresses it about as much as
    a small photograph (about 6 KB against 12 KB raw)."""
    rng = np.random.default_rng([seed, i])
    out = np.zeros((SIDE, SIDE, 3), np.float32)
    for cells, amplitude in ((4, 1.0), (8, 0.5), (16, 0.25)):
        grid = rng.random((cells, cells, 3), dtype=np.float32)
        for c in range(3):
            plane = Image.fromarray(grid[..., c], mode="F")
            plane = plane.resize((SIDE, SIDE), Image.Resampling.BICUBIC)
            out[..., c] += amplitude * np.asarray(plane)
    return np.clip(out * (255 / 1.75), 0, 255).astype(np.uint8)


def _image_chunk(job: tuple[int, int, int, str]) -> np.ndarray:
    """Images ``start`` to ``stop`` as (n, 3, 64, 64), each also saved as a PNG in ``folder``."""
    start, stop, seed, folder = job
    block = np.stack([smooth_image(i, seed) for i in range(start, stop)])
    for i, pixels in zip(range(start, stop), block, strict=True):
        Image.fromarray(pixels).save(Path(folder) / f"{i:07d}.png")
    return block.transpose(0, 3, 1, 2)


def image_data(workdir: Path, n: int, seed: int) -> tuple[Path, Path]:
    """The folder of ``n`` PNG images and the same images as an .npy, both made (by a pool of
    two processes) unless both are there."""
    folder, npy = workdir / f"png_{n}_seed{seed}", workdir / f"images_{n}_seed{seed}.npy"
    shape = (n, 3, SIDE, SIDE)
    if folder.is_dir() and len(os.listdir(folder)) == n and _npy_ready(npy, shape):
        return folder, npy
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    jobs = [(a, min(a + CHUNK_IMAGES, n), seed, str(partial)) for a in range(0, n, CHUNK_IMAGES)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        _write_npy(npy, shape, pool.imap(_image_chunk, jobs))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder, npy


# --- the measured process ----------------------------------------------------------------------


class StepClock(Observer):
    """When each step ended and how long the loop had waited for batches by then; asks the
    run to stop (SIGINT: a checkpoint, then TrainingInterrupted) after ``steps`` steps."""

    def __init__(self, steps: int | None) -> None:
        self.steps, self.marks = steps, []
        self.start = (0.0, 0.0)

    def on_start(self, trainer) -> None:
        self.start = (time.time(), time.perf_counter())

    def on_step_end(self, trainer, epoch_loss: torch.Tensor) -> None:
        self.marks.append((time.perf_counter(), trainer.parts.feed.wait_seconds))
        if self.steps and len(self.marks) == self.steps:
            signal.raise_signal(signal.SIGINT)

    def report(self, entered: float, warmup: int) -> dict:
        wall, t0 = self.start
        last, waited = self.marks[-1]
        w = min(warmup, len(self.marks) // 2)
        t_w, waited_w = self.marks[w - 1] if w else (t0, 0.0)
        return {
            "steps": len(self.marks), "seconds": last - t0, "wait_seconds": waited,
            "warmup_steps": w, "seconds_after_warmup": last - t_w,
            "wait_seconds_after_warmup": waited - waited_w, "setup_seconds": wall - entered,
            "window": [wall, wall + last - t0], "torch_threads": torch.get_num_threads(),
        }  # fmt: skip


def _child(spec_file: str) -> int:
    """The measured process: train as the spec says; write the summary and the step clock."""
    entered = time.time()
    spec = json.loads(Path(spec_file).read_text())
    clock = StepClock(spec["steps"])
    try:
        summary = fit(TrainConfig(**spec["config"]), observers=[clock]).summary
    except TrainingInterrupted:
        summary = None
    report = {"summary": summary, "clock": clock.report(entered, spec["warmup"])}
    Path(spec["result"]).write_text(json.dumps(report))
    return 0


def run_child(name: str, config: dict, workdir: Path, args: argparse.Namespace, steps=None):
    """Train ``config`` in a fresh child process, sampling its memory; its report."""
    out = workdir / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    config = {**config, "out": str(out), "tensorboard": False, "check_reference": False}
    spec = {"config": config, "steps": steps, "warmup": args.warmup_steps,
            "result": str(workdir / f"{name}.result.json")}  # fmt: skip
    spec_file = workdir / f"{name}.spec.json"
    spec_file.write_text(json.dumps(spec))
    log = workdir / f"{name}.log"
    t0, load = time.time(), os.getloadavg()[0]
    with open(log, "w") as f:
        command = [sys.executable, "-m", "benchmarks.streaming", "--child", str(spec_file)]
        child = subprocess.Popen(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        done, samples = threading.Event(), []
        watch = (child.pid, args.sample_every, args.pss_every, done, samples)
        sampler = threading.Thread(target=sample, args=watch, daemon=True)
        sampler.start()
        code = child.wait()
        done.set()
        sampler.join()
    if code != 0:
        raise RuntimeError(f"{name}: the training process exited with {code}; see {log}")
    result = json.loads(Path(spec["result"]).read_text())
    result["memory"] = memory_report(samples, child.pid, result["clock"]["window"])
    result["wall_seconds"] = time.time() - t0
    result["loadavg_before_after"] = [load, os.getloadavg()[0]]  # a busy machine shows here
    result["options"] = {k: v for k, v in config.items() if k != "out"}
    return result


# --- the cases ---------------------------------------------------------------------------------


def measure_memory(args: argparse.Namespace, workdir: Path) -> dict:
    if args.resident_rows > args.rows:
        raise ValueError("--resident-rows must not exceed --rows")
    big, small = (row_file(workdir / f"rows_{n}_seed{args.seed}.npy", n, args.seed)
                  for n in (args.rows, args.resident_rows))  # fmt: skip
    common = {"epochs": 1, "test_fraction": args.test_fraction, "batch_size": args.batch_size}
    streamed = {**common, "data": str(big), "stream": "always", "workers": args.workers}
    runs = {"streamed": run_child("memory_stream", streamed, workdir, args),
            "resident": run_child("memory_device", {**common, "data": str(small),
                                                    "stream": "never"}, workdir, args)}  # fmt: skip
    for run in runs.values():
        run.update({k: run["summary"][k] for k in ("images_per_second", "num_train", "num_test")})
        run["data"] = run["summary"]["data"]
    ratio = runs["streamed"]["images_per_second"] / runs["resident"]["images_per_second"]
    peak = runs["streamed"]["memory"]["whole_run"]["rss_anon_sum_peak_gb"]
    sizes = {"rows": args.rows, "row_bytes": WIDTH, "file_gb": args.rows * WIDTH / GB,
             "resident_rows": args.resident_rows, "batch_size": args.batch_size,
             "workers": args.workers, "test_fraction": args.test_fraction}  # fmt: skip
    targets = {"rss_anon_sum_peak_gb_at_most": TARGETS["rss_anon_sum_peak_gb"],
               "streamed_to_resident_at_least": TARGETS["streamed_to_resident"]}  # fmt: skip
    met = {"rss_anon_sum_peak_gb": peak <= TARGETS["rss_anon_sum_peak_gb"],
           "streamed_to_resident": ratio >= TARGETS["streamed_to_resident"]}  # fmt: skip
    notes = {
        "memory": COPY_ON_WRITE + " The target is held against the whole run's peak (RssAnon "
        "of the trainer and its workers, summed), the check of every row before the first "
        "step included; 'training_steps' is the peak over the steps alone.",
        "images_per_second": "from summary.json: the epoch's training images over its "
        "train_seconds (the steps alone: the evaluation after the epoch is not in it)",
        "test_fraction": "the test split is streamed too and measured after the epoch; "
        f"--test-fraction {args.test_fraction} holds out {runs['streamed']['num_test']:,} of "
        f"{args.rows:,} rows (0.01 of 3,000,000: 30,000), so the run's time stays on "
        "training; the images/s above leave the evaluation out either way",
    }
    run = "the default MLP (784-400-16, bernoulli, dynamic binarization), one epoch"
    return {"case": "memory", "sizes": sizes, "run": run, **runs, "streamed_to_resident": ratio,
            "targets": targets, "met": met, "notes": notes}  # fmt: skip


def _step_rates(clock: dict, batch_size: int) -> dict[str, float]:
    """The share of the steps' time spent waiting for batches, and images/s: over every step,
    and after the warm-up steps."""
    after = clock["steps"] - clock["warmup_steps"]
    return {
        "data_wait_share": clock["wait_seconds"] / clock["seconds"],
        "images_per_second": clock["steps"] * batch_size / clock["seconds"],
        "data_wait_share_after_warmup": clock["wait_seconds_after_warmup"]
        / clock["seconds_after_warmup"],
        "images_per_second_after_warmup": after * batch_size / clock["seconds_after_warmup"],
    }


def measure_images(args: argparse.Namespace, workdir: Path) -> dict:
    folder, npy = image_data(workdir, args.images, args.seed)
    common = {"epochs": 1, "network": "conv", "likelihood": "gaussian", "binarize": "none",
              "stream": "always", "workers": args.workers,
              "batch_size": args.batch_size}  # fmt: skip
    runs, met, limit = {}, {}, TARGETS["data_wait_share"]
    for name, path in (("png", folder), ("npy", npy)):
        config = {**common, "data": str(path)}
        runs[name] = run = run_child(f"images_{name}", config, workdir, args, args.steps)
        run.update(_step_rates(run["clock"], args.batch_size))
        met[f"{name}_data_wait_share"] = run["data_wait_share"] < limit
    png_gb = sum(p.stat().st_size for p in folder.iterdir()) / GB
    sizes = {"images": args.images, "shape": [3, SIDE, SIDE], "png_gb": png_gb,
             "npy_gb": npy.stat().st_size / GB, "steps": args.steps,
             "batch_size": args.batch_size, "workers": args.workers}  # fmt: skip
    notes = {
        "data_wait_share": "the loop's wait for batches (StreamFeed.wait_seconds: what of "
        "reading, decoding and the float conversion the workers did not hide) over the time "
        "from the loop's start to the last step's end; the first batch waits for the workers "
        "to start, which the share after the warm-up steps leaves out",
        "memory": COPY_ON_WRITE,
    }
    run = "conv net, gaussian likelihood, no binarization, one epoch stopped after the steps "
    run += "(SIGINT: a checkpoint, then a clean stop), or at the epoch's end if sooner"
    return {"case": "images", "sizes": sizes, "run": run, **runs,
            "targets": {"data_wait_share_below": limit}, "met": met, "notes": notes}  # fmt: skip


FLAGS = [  # (flag, type, default, help)
    ("--rows", int, 3_000_000, "memory: rows of the .npy"),
    ("--resident-rows", int, 200_000, "memory: its first rows, held on the device"),
    ("--test-fraction", float, 0.01, "memory: rows held out"),
    ("--images", int, 100_000, "images: how many"),
    ("--steps", int, 200, "images: steps trained on each"),
    ("--warmup-steps", int, 10, "images: steps the 'after_warmup' numbers leave out"),
    ("--batch-size", int, 128, "images per step"),
    ("--workers", int, 2, "DataLoader workers"),
    ("--seed", int, 0, "of the data made"),
    ("--sample-every", float, 0.2, "seconds between memory samples (RssAnon)"),
    ("--pss-every", float, 10.0, "seconds between Pss_Anon readings (a page-table walk)"),
]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", choices=("memory", "images", "both"), default="both")
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "pyro_vae_streaming"))
    p.add_argument("--out", default="benchmarks/results", help="folder of the JSON reports")
    for flag, kind, default, text in FLAGS:
        p.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args.child)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    machine = machine_block(torch.device("cpu"))  # the matmul peak, before any run
    print(f"machine: {machine_line(machine['machine'])}")
    for case in ("memory", "images") if args.case == "both" else (args.case,):
        measure = measure_memory if case == "memory" else measure_images
        command = shlex.join(["python", "-m", "benchmarks.streaming", *argv])
        result = {**machine, "command": command, **measure(args, workdir)}
        path = Path(args.out) / f"streaming_{case}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
        print(f"{case}: met {result['met']}; {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
