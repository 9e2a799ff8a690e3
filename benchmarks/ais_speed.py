"""AIS log p(x) side by side: this project's annealing, through Pyro, captured and compiled,
against the plain AIS loop people write by hand in bare torch (:mod:`.handwritten_ais`).

The model is the default run's VAE (MLP 784-400-16, Bernoulli pixels) trained ``--epochs``
epochs on mnist-sample; the images are the first ``--images`` test images, binarized once.
Every path runs the same algorithm (T annealing steps on the sigmoid schedule from q(z|x), C
chains per image, HMC with L leapfrog steps, Wu et al.'s step-size rule), so the estimates
agree to Monte Carlo error (and this project's paths to float32 rounding: the same chains).
Each path first runs a warm-up of 2 steps on the same images (where the compiled path
compiles: its seconds are ``warmup_seconds``), then ``--rounds`` timed runs, the paths
alternating, of which the median is reported.

    python -m benchmarks.ais_speed --steps 200 --chains 8 --leapfrog 2 --images 20

Reported per path: seconds, images/s, the rate of the decoder's matrix products (forward and
the backward pass to z: 4 m k n flops per product per evaluation), the time relative to the
hand-written loop, the mean log p(x), and the other processes' share of the CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import nn

from benchmarks.handwritten_ais import handwritten_ais
from benchmarks.log_likelihood_eval import decoder_flops_per_particle
from benchmarks.machine import LoadMonitor, machine_block, machine_line
from pyro_vae import param_store
from pyro_vae.data import load_dataset
from pyro_vae.inference.ais import ais_log_likelihood
from pyro_vae.studies.tables import markdown_table
from pyro_vae.training import TrainConfig, Trainer, assemble

PATHS = ("hand-written", "pyro-vae-pyro", "pyro-vae-graph", "pyro-vae-compiled")
LABELS = {
    "hand-written": "hand-written AIS loop, bare torch + autograd",
    "pyro-vae-pyro": "pyro-vae, transitions through Pyro (before)",
    "pyro-vae-graph": "pyro-vae, transition captured as one graph",
    "pyro-vae-compiled": "pyro-vae, captured and compiled (Inductor)",
}


def trained_vae(epochs: int, seed: int) -> tuple[nn.Module, torch.Tensor]:
    """The default run's VAE after ``epochs`` epochs on mnist-sample, and its test images."""
    data = load_dataset("mnist-sample")
    config = TrainConfig(
        epochs=epochs, device="cpu", seed=seed, check_reference=False, progress=False,
        tensorboard=False,
    )  # fmt: skip
    trainer = Trainer(assemble(config, data))
    for _ in range(epochs):
        trainer.run_epoch()
    return trainer.parts.vae, data.test_x


def _evaluators(vae: nn.Module, opts: argparse.Namespace) -> dict[str, Callable]:
    """path -> evaluate(images, num_steps) -> log p(x) per image."""

    def ours(mode: str) -> Callable:
        def run(x: torch.Tensor, steps: int) -> torch.Tensor:
            return ais_log_likelihood(
                vae.model, vae.guide, x, steps, opts.chains, opts.leapfrog, compile=mode
            ).per_image

        return run

    def hand(x: torch.Tensor, steps: int) -> torch.Tensor:
        return handwritten_ais(vae.encoder, vae.decoder, x, steps, opts.chains, opts.leapfrog)

    return {
        "hand-written": hand,
        "pyro-vae-pyro": ours("pyro"),
        "pyro-vae-graph": ours("graph"),
        "pyro-vae-compiled": ours("inductor"),
    }


def _decoder_flops(vae: nn.Module, opts: argparse.Namespace, images: int) -> float:
    """Decoder product flops of the run: forward and backward to z (2 + 2 per multiply-add),
    T L evaluations (the hand-written loop makes T more, for its weights) per chain."""
    per_row = decoder_flops_per_particle(vae.decoder)
    return 2 * per_row * opts.steps * opts.leapfrog * opts.chains * images


def _timed(evaluate: Callable, x: torch.Tensor, steps: int, seed: int) -> dict[str, Any]:
    pyro.set_rng_seed(seed)
    with LoadMonitor() as load:
        t0 = time.perf_counter()
        estimate = evaluate(x, steps)
        seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "mean_log_likelihood": float(estimate.mean()),
        "other_cpu_share": load.other_cpu_share,
    }


def measure(opts: argparse.Namespace) -> dict[str, Any]:
    """Every path of ``opts.paths`` warmed up (2 steps), then timed ``opts.rounds`` times, the
    order of the paths alternating from round to round so that a drift of the machine falls
    on all of them; the median round of each, beside the machine."""
    machine = machine_block(torch.device("cpu"))
    torch.manual_seed(opts.seed)
    vae, test_x = trained_vae(opts.epochs, opts.seed)
    x = torch.bernoulli(test_x[: opts.images].reshape(opts.images, -1))
    evaluators = _evaluators(vae, opts)
    flops = _decoder_flops(vae, opts, opts.images)
    rounds: dict[str, list[dict[str, Any]]] = {slug: [] for slug in opts.paths}
    warmup: dict[str, float] = {}
    with torch.no_grad(), param_store.off():
        for slug in opts.paths:
            t0 = time.perf_counter()
            evaluators[slug](x, 2)
            warmup[slug] = time.perf_counter() - t0
        for r in range(opts.rounds):
            for slug in opts.paths if r % 2 == 0 else reversed(opts.paths):
                rounds[slug].append(_timed(evaluators[slug], x, opts.steps, opts.seed))
                print(f"round {r + 1} {slug}: {rounds[slug][-1]['seconds']:.2f} s")
    paths: dict[str, Any] = {}
    for slug, runs in rounds.items():
        median = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]
        paths[slug] = median | {
            "label": LABELS[slug],
            "rounds_seconds": [run["seconds"] for run in runs],
            "warmup_seconds": warmup[slug],
            "images_per_second": opts.images / median["seconds"],
            "decoder_gflops": flops / median["seconds"] / 1e9,
        }
    if "hand-written" in paths:
        for res in paths.values():
            res["vs_hand_written"] = res["seconds"] / paths["hand-written"]["seconds"]
    settings = {k: getattr(opts, k) for k in ("steps", "chains", "leapfrog", "images", "epochs")}
    return machine | {"settings": settings | {"rounds": opts.rounds}, "paths": paths}


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    header = (
        f"AIS log p(x), T={s['steps']}, {s['chains']} chains, {s['leapfrog']} leapfrog steps, "
        f"{s['images']} mnist-sample test images, MLP 784-400-16 trained {s['epochs']} epochs; "
        f"median of {s['rounds']} alternating rounds; "
        f"{machine_line(result['machine'])}"
    )
    ratio = "vs_hand_written"
    return markdown_table(
        header,
        [
            ("label", "path", ""),
            ("seconds", "seconds", ".2f"),
            ("images_per_second", "images/s", ".2f"),
            ("decoder_gflops", "decoder GFLOP/s", ".1f"),
            ("", "time vs hand-written", lambda r: f"{r[ratio]:.2f}x" if ratio in r else "–"),
            ("warmup_seconds", "warm-up / compile (s)", ".1f"),
            ("mean_log_likelihood", "mean log p(x)", ".2f"),
            ("", "other load", lambda r: f"{r['other_cpu_share']:.1%}"),
        ],
        list(result["paths"].values()),
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ais_speed", description=__doc__)
    p.add_argument("--steps", type=int, default=200, help="annealing steps T")
    p.add_argument("--chains", type=int, default=8)
    p.add_argument("--leapfrog", type=int, default=2, help="leapfrog steps per transition")
    p.add_argument("--images", type=int, default=20, help="test images")
    p.add_argument("--epochs", type=int, default=5, help="training epochs of the model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3, help="timed runs of each path (median)")
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS, metavar="PATH")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ais_speed.json"))
    return p


def main(argv: list[str] | None = None) -> int:
    opts = parser().parse_args(argv)
    result = measure(opts)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    opts.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
