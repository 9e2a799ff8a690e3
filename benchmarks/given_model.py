"""The built-in VAE passed as ``pyro_vae.train(vae=...)`` against the same VAE named by its
options: the same step (sync-free, and compiled with ``--compile``), so the same speed.

Two trainers of the default run (MLP 784-400-16 on mnist-sample, batch 128, mean-field) train
epoch after epoch in turn, the order alternating each round, so that a drift of the machine
is shared by both: ``named`` builds its VAE from the options (``TrainConfig(hidden=...)``),
``given`` is handed one built by ``build_vae`` with the same options (``model="given"``). Each
epoch's steps are timed (no evaluation, no files); the first round is a warm-up. Reported: the
median epoch of each arm and the median of the rounds' paired ratios given / named, with the
spread of those ratios (the noise a claim of "the same speed" is held against).

    python -m benchmarks.given_model --rounds 10 --out benchmarks/results/given_model.json
    python -m benchmarks.given_model --compile --rounds 10 --out ...given_model_compiled.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from benchmarks.machine import machine_block, machine_line
from pyro_vae.data import load_dataset
from pyro_vae.model import build_vae
from pyro_vae.training import TrainConfig, Trainer, assemble

SHAPE = (1, 28, 28)


def _trainers(compile: bool, seed: int) -> dict[str, Trainer]:
    """The two arms: the VAE named by its options, and the same VAE given from Python."""
    data = load_dataset("mnist-sample")
    common = dict(
        epochs=1, batch_size=128, device="cpu", seed=seed, compile=compile,
        check_reference=False, progress=False, tensorboard=False,
    )  # fmt: skip
    named = TrainConfig(hidden=(400,), z_dim=16, **common)
    given_config = TrainConfig(model="given", binarize="dynamic", **common)
    torch.manual_seed(seed)
    vae = build_vae(SHAPE, hidden=(400,), z_dim=16)
    return {
        "named": Trainer(assemble(named, data)),
        "given": Trainer(assemble(given_config, data, vae)),
    }


def measure(rounds: int, compile: bool, seed: int = 0) -> dict:
    """Epoch seconds of both arms over ``rounds`` alternating rounds (the first a warm-up),
    beside the machine (its matmul peak measured first)."""
    machine = machine_block(torch.device("cpu"))
    trainers = _trainers(compile, seed)
    seconds: dict[str, list[float]] = {arm: [] for arm in trainers}
    for r in range(rounds + 1):
        order = list(trainers) if r % 2 == 0 else list(reversed(trainers))
        for arm in order:
            took = trainers[arm].run_epoch()
            if r > 0:
                seconds[arm].append(took)
    ratios = [g / n for g, n in zip(seconds["given"], seconds["named"], strict=True)]
    return {
        **machine,
        "compiled": compile,
        "rounds": rounds,
        "epoch_seconds": {arm: statistics.median(s) for arm, s in seconds.items()},
        "all_epoch_seconds": seconds,
        "ratio_given_to_named": statistics.median(ratios),
        "ratio_spread": [min(ratios), max(ratios)],
        "run": "MLP 784-400-16, mnist-sample (4,000 images), batch 128, mean-field, one process",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=10, help="timed rounds after one warm-up")
    p.add_argument("--compile", action="store_true", help="both arms run the compiled step")
    p.add_argument("--out", default="benchmarks/results/given_model.json")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    result = measure(args.rounds, args.compile)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    e = result["epoch_seconds"]
    print(
        f"named {e['named']:.3f} s/epoch, given {e['given']:.3f} s/epoch; given/named "
        f"{result['ratio_given_to_named']:.3f} (rounds {result['ratio_spread'][0]:.3f}-"
        f"{result['ratio_spread'][1]:.3f}); on {machine_line(result['machine'])}; {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
