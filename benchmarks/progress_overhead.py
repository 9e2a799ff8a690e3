"""What progress and TensorBoard logging cost a training epoch, measured side by side.

One trainer of the default run (MLP 784-400-16 on mnist-sample, batch 128) trains epoch after
epoch, each with one of three sets of observers, in turn (the order alternates each round), so
that the model, its memory and any drift of the machine are shared by all three:

- ``off``: no observers at all (what ``python -m benchmarks.compare`` times);
- ``log``: metrics.csv, progress as plain lines (a log file) and TensorBoard event files;
- ``bar``: the same with the progress bar of a terminal (redrawn every 0.1 s).

Each epoch is timed whole (steps, the epoch's evaluation, and every observer's work at its
end: the metrics row, the TensorBoard scalars, flush and images) and for its steps alone (where
the per-step observer call runs). Medians over the rounds, and the median of each round's
ratio to ``off`` (paired); the first round is a warm-up. An epoch of this run varies by about
10% from one to the next on a shared machine, more than the cost being measured, so the
per-step cost is also timed directly: the observers' calls after a step, a million times over,
against the step's median time.

    python -m benchmarks.progress_overhead --rounds 20 --out benchmarks/progress_overhead.json
"""

from __future__ import annotations

import argparse
import io
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
from pyro_vae.training import MetricsCSV, Progress, RunDirectory, TrainConfig, Trainer, assemble
from pyro_vae.training.devices import synchronize
from pyro_vae.training.metrics import METRIC_FIELDS
from pyro_vae.training.tensorboard import TensorBoardLog


class Terminal(io.StringIO):
    """A terminal as tqdm sees it (frames are drawn, then dropped)."""

    def isatty(self) -> bool:
        return True


def _observers(trainer: Trainer, run_dir: RunDirectory) -> dict[str, list]:
    """The observer sets of the three arms, started."""
    arms = {"off": []}
    for arm, stream in (("log", open(os.devnull, "w")), ("bar", Terminal())):  # noqa: SIM115
        tensorboard = TensorBoardLog(run_dir.path / arm)
        arms[arm] = [MetricsCSV(run_dir), Progress(stream), tensorboard]
        for observer in arms[arm]:
            observer.on_start(trainer)
    return arms


def _epoch(trainer: Trainer) -> tuple[float, float]:
    """(whole epoch seconds, seconds of its steps)."""
    synchronize(trainer.parts.device)
    t0 = time.perf_counter()
    with param_store.off():
        trainer._epoch([])
    return time.perf_counter() - t0, trainer.metrics[-1]["train_seconds"]


def _per_step_call(trainer: Trainer, calls: int = 1_000_000) -> float:
    """Seconds the loop spends per step calling the observers (as Trainer._train_epoch does)."""
    total = torch.zeros(())
    observers = trainer.observers
    t0 = time.perf_counter()
    for _ in range(calls):
        for observer in observers:
            observer.on_step_end(trainer, total)
    return (time.perf_counter() - t0) / calls


def _measure(rounds: int) -> tuple[dict[str, list[tuple[float, float]]], dict, int]:
    """The default run's epoch under each arm, the arms alternating for ``rounds`` rounds after
    one warm-up round: (epoch, steps) seconds per arm, an observer's call per step, steps per
    epoch."""
    data = load_dataset("mnist-sample")
    arms = ("off", "log", "bar")
    times: dict[str, list[tuple[float, float]]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory() as scratch:
        config = TrainConfig(out=scratch, progress=False, tensorboard=False)
        run_dir = RunDirectory(scratch)
        trainer = Trainer(assemble(config, data), None, [])
        run_dir.start(config.as_dict(), METRIC_FIELDS, [])
        observers = _observers(trainer, run_dir)
        for r in range(rounds + 1):
            for arm in arms if r % 2 else reversed(arms):
                trainer.observers = observers[arm]
                whole, steps = _epoch(trainer)
                if r:  # round 0 warms up
                    times[arm].append((whole, steps))
                print(f"round {r} {arm}: epoch {whole:.3f} s, steps {steps:.3f} s", file=sys.stderr)
        per_call = {}
        for arm in ("log", "bar"):
            trainer.observers = observers[arm]
            per_call[arm] = _per_step_call(trainer)
            for observer in observers[arm]:
                observer.on_close(trainer)
        return times, per_call, trainer.parts.steps_per_epoch


def _summary(times: dict, per_call: dict, steps_per_epoch: int, rounds: int, machine: dict) -> dict:
    """Medians per arm, each arm's overhead against no observers, and the machine block."""
    median = {
        arm: {
            "epoch_seconds": statistics.median(w for w, _ in t),
            "step_seconds": statistics.median(s for _, s in t),
        }
        for arm, t in times.items()
    }
    base = median["off"]
    paired = {
        arm: statistics.median(
            t[1] / o[1] - 1 for t, o in zip(times[arm], times["off"], strict=True)
        )
        for arm in ("log", "bar")
    }
    return {
        "what": "default run (MLP 784-400-16, mnist-sample, batch 128), an epoch per arm a round",
        **machine,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rounds": rounds,
        "median": median,
        "overhead": {
            arm: {
                "epoch": median[arm]["epoch_seconds"] / base["epoch_seconds"] - 1,
                "steps": median[arm]["step_seconds"] / base["step_seconds"] - 1,
            }
            for arm in ("log", "bar")
        },
        "paired_step_overhead": paired,
        "observer_seconds_per_step": per_call,
        "observer_share_of_a_step": {
            arm: per_call[arm] * steps_per_epoch / base["step_seconds"] for arm in ("log", "bar")
        },
        "rounds_seconds": times,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="timed epochs per arm (8)")
    parser.add_argument("--out", default="benchmarks/progress_overhead.json", help="JSON file")
    args = parser.parse_args(argv)
    machine = machine_block(torch.device("cpu"))  # the matmul peak, before the timings
    result = _summary(*_measure(args.rounds), args.rounds, machine)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"machine: {machine_line(result['machine'])}")
    for arm in ("log", "bar"):
        o = result["overhead"][arm]
        share = result["observer_share_of_a_step"][arm]
        paired = result["paired_step_overhead"][arm]
        print(
            f"{arm}: epoch {o['epoch']:+.1%}, steps {o['steps']:+.1%} (paired "
            f"{paired:+.1%}) against no observers; the observer calls alone: {share:.3%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
