"""What ``--tracker mlflow`` costs a run, call by call, against an epoch of the default run.

One trainer of the default run (MLP 784-400-16 on mnist-sample, batch 128, no observers)
trains a few epochs, timed whole (steps and the epoch's evaluation): the median is the epoch
the tracker's calls are measured against. Then, for each store (MLflow's local default,
``sqlite:///``, and the ``file:`` store) in a fresh scratch directory, the tracker's points
are called as the loop calls them and timed: connecting (the store made, as for the first run
on it, and the experiment found; MLflow imported before, and timed apart), ``on_start``
(the MLflow run made, the parameters logged), ``on_epoch_end`` ``--calls`` times (one
``log_batch`` of a metrics row each, the only cost that recurs every epoch: the time it holds
the loop, median and worst, and the CPU time it takes in all, MLflow's logging thread
included), and ``on_close`` + ``on_end`` (status, summary metrics, config.json, summary.json,
metrics.csv and the run's drawn figures as artifacts). The per-epoch share is
``on_epoch_end`` over the epoch (the goal: under 2%); the one-off costs are given in seconds
and in epochs. Since MLflow logs the row in a thread of its own while the next epoch trains,
``--rounds`` paired rounds also time two epochs with the call between them against two
without (median ratio, less 1): the cost as the loop sees it, that thread's CPU included.

    python -m benchmarks.tracking --out benchmarks/results/tracking.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.machine import machine_block, machine_line
from pyro_vae import param_store
from pyro_vae.data import load_dataset
from pyro_vae.report import FiguresAtEnd
from pyro_vae.training import RunDirectory, TrainConfig, Trainer, assemble
from pyro_vae.training.metrics import metric_fields
from pyro_vae.training.trackers import MLflowTracker

GOAL = 0.02  # the share of an epoch tracking may take


def _epoch_seconds(trainer: Trainer, epochs: int) -> list[float]:
    """Whole epochs (steps and evaluation) of the default run, after one warm-up epoch."""
    times = []
    for e in range(epochs + 1):
        t0 = time.perf_counter()
        with param_store.off():
            trainer._epoch([])
        if e:
            times.append(time.perf_counter() - t0)
        print(f"epoch {e}: {time.perf_counter() - t0:.3f} s", file=sys.stderr)
    return times


def _timed(call) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def _paired(trainer: Trainer, tracker: MLflowTracker, rounds: int) -> float:
    """The tracker's cost as the loop sees it: two epochs with ``on_epoch_end`` called after
    the first (its row logged by MLflow's thread during the second, waited for at the end)
    against two epochs without, in turn; the median of the rounds' ratios, less 1."""
    ratios = []
    for r in range(rounds):
        times = {}
        for arm in ("on", "off") if r % 2 else ("off", "on"):
            t0 = time.perf_counter()
            with param_store.off():
                trainer._epoch([])
                if arm == "on":
                    tracker.on_epoch_end(trainer, trainer.metrics[-1])
                trainer._epoch([])
                tracker.wait()
            times[arm] = time.perf_counter() - t0
        ratios.append(times["on"] / times["off"])
    return statistics.median(ratios) - 1


def _store(trainer: Trainer, uri: str, scratch: Path, calls: int, rounds: int) -> dict:
    """The tracker's points on one store, timed as the loop calls them."""
    config = TrainConfig(out=str(scratch / "run"), tracker="mlflow", tracking_uri=uri)
    run_dir = RunDirectory(config.out)
    run_dir.path.mkdir()
    run_dir.start(config.as_dict(), metric_fields(trainer.vae), trainer.metrics)
    tracker = MLflowTracker(config, run_dir)
    row = dict(trainer.metrics[-1])
    result = {
        "connect_seconds": _timed(lambda: tracker.connect(resume=False)),
        "on_start_seconds": _timed(lambda: tracker.on_start(trainer)),
    }
    per_call = []
    cpu = time.process_time()
    for epoch in range(1, calls + 1):
        row["epoch"] = epoch
        tracker.wait()  # the last epoch's row is logged while an epoch trains: long done
        per_call.append(_timed(lambda: tracker.on_epoch_end(trainer, row)))  # noqa: B023
    tracker.wait()
    result["on_epoch_end_cpu_seconds"] = (time.process_time() - cpu) / calls  # all threads
    result["paired_epoch_overhead"] = _paired(trainer, tracker, rounds)
    summary = trainer.summary()
    run_dir.write_summary(summary)
    saved_dir, trainer.run_dir = trainer.run_dir, run_dir
    FiguresAtEnd().on_end(trainer, summary)  # the figures the tracker sends, as in a run
    trainer.run_dir = saved_dir
    result["on_close_and_on_end_seconds"] = _timed(
        lambda: (tracker.on_close(trainer), tracker.on_end(trainer, summary))
    )
    result["on_epoch_end_median_seconds"] = statistics.median(per_call)
    result["on_epoch_end_max_seconds"] = max(per_call)
    return result


def measure(epochs: int, calls: int, rounds: int) -> dict:
    data = load_dataset("mnist-sample")
    config = TrainConfig(progress=False, tensorboard=False)
    trainer = Trainer(assemble(config, data), None, [])
    epoch = statistics.median(_epoch_seconds(trainer, epochs))
    t0 = time.perf_counter()
    import mlflow  # noqa: F401  (its import is part of the first connect: timed apart)

    stores = {"import_mlflow_seconds": time.perf_counter() - t0}
    here = os.getcwd()
    for name in ("sqlite", "file"):
        with tempfile.TemporaryDirectory() as scratch:
            os.chdir(scratch)  # sqlite: MLflow's default store, in the working directory
            try:
                uri = "sqlite:///mlflow.db" if name == "sqlite" else f"file:{scratch}/mlruns"
                stores[name] = _store(trainer, uri, Path(scratch), calls, rounds)
            finally:
                os.chdir(here)
        s = stores[name]
        s["per_epoch_share"] = s["on_epoch_end_median_seconds"] / epoch
        once = s["connect_seconds"] + s["on_start_seconds"] + s["on_close_and_on_end_seconds"]
        s["once_per_run_in_epochs"] = once / epoch
        print(f"{name}: {json.dumps(s)}", file=sys.stderr)
    return {"epoch_seconds": epoch, "epochs_timed": epochs, "calls": calls, "rounds": rounds,
            "goal": GOAL,
            "mlflow": mlflow.__version__, "load_average": os.getloadavg()[0],
            "stores": stores}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tracking", description=__doc__)
    p.add_argument("--epochs", type=int, default=3, help="epochs timed after one warm-up")
    p.add_argument("--calls", type=int, default=100, help="on_epoch_end calls timed per store")
    p.add_argument("--rounds", type=int, default=10, help="paired rounds of two epochs per store")
    p.add_argument("--out", default="benchmarks/results/tracking.json", help="the JSON to write")
    args = p.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    machine = machine_block(torch.device("cpu"))  # the matmul peak, before the timings
    result = {**machine, **measure(args.epochs, args.calls, args.rounds)}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    stores = [s for s in result["stores"].values() if isinstance(s, dict)]
    worst = max(s["per_epoch_share"] for s in stores)
    paired = max(s["paired_epoch_overhead"] for s in stores)
    print(
        f"on_epoch_end holds the loop for at most {worst:.3%} of an epoch; paired epochs: "
        f"{paired:+.2%} (goal < {GOAL:.0%}); on {machine_line(result['machine'])}; {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
