"""Timing log p(x) (importance sampling, K = 5000) side by side: this project's evaluation
eager and compiled, against the importance-sampling loop people write by hand.

Every path evaluates the same model (the benchmark's MLP, freshly initialised and seeded: the
work per particle does not depend on the weights) on the same binarized test images, after one
untimed warm-up on the first chunk's images (which is when the compiled path compiles; its
seconds are reported as ``compile_seconds``). Reported per path: seconds per image, the rate of
the decoder's matrix products (GFLOP/s; the decoder is where 95% of the products are) and its
share of the machine's matmul peak measured in the same run, the memory it needed beyond what was
in use when it began (the RSS high-water mark, reset before each path after the allocator has
returned its free memory, or CUDA's allocator), the other processes' CPU share, and the time
relative to the hand-written loop.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import pyro
import torch
from torch import nn

from pyro_vae import param_store
from pyro_vae.data import ImageData
from pyro_vae.inference import ImportanceSampler
from pyro_vae.inference.particle_chunks import ChunkPlan
from pyro_vae.model import VAE, build_vae
from pyro_vae.studies.harness import at_least
from pyro_vae.studies.tables import markdown_table
from pyro_vae.training.devices import synchronize

from .handwritten_log_likelihood import handwritten_log_likelihood
from .machine import LoadMonitor, memory_mb, peak_memory_mb, reset_peak_memory

NUM_SAMPLES = 5000
OLD_CHUNKS = (100, 500)  # images x particles: the loop's (and this project's former) chunks


def decoder_flops_per_particle(decoder: nn.Module) -> int:
    """Multiply-adds x 2 of the decoder's linear layers for one particle."""
    return sum(
        2 * m.in_features * m.out_features for m in decoder.modules() if isinstance(m, nn.Linear)
    )


def eval_paths(vae: VAE, plan: ChunkPlan) -> dict[str, tuple[str, Callable[[torch.Tensor], Any]]]:
    """slug -> (label, evaluate(images)); each returns log p(x) per image."""
    enc, dec = vae.encoder, vae.decoder

    def pyro_vae(compile: bool, chunks: tuple[int, int] | None = None):
        sampler = ImportanceSampler(
            vae.model, vae.guide, NUM_SAMPLES, *(chunks or (None, None)), compile=compile
        )
        return lambda xb: sampler(xb).per_image

    return {
        "hand-written": (
            f"hand-written loop ({OLD_CHUNKS[0]} x {OLD_CHUNKS[1]} chunks)",
            lambda xb: handwritten_log_likelihood(enc, dec, xb, NUM_SAMPLES, *OLD_CHUNKS),
        ),
        "hand-written-cache": (
            f"hand-written loop, cache-sized chunks ({plan.images} x {plan.particles})",
            lambda xb: handwritten_log_likelihood(
                enc, dec, xb, NUM_SAMPLES, plan.images, plan.particles
            ),
        ),
        "pyro-vae-before": (
            f"pyro-vae eager, {OLD_CHUNKS[0]} x {OLD_CHUNKS[1]} chunks (before)",
            pyro_vae(False, OLD_CHUNKS),
        ),
        "pyro-vae": ("pyro-vae eager, cache-sized chunks", pyro_vae(False)),
        "pyro-vae-compile": ("pyro-vae evaluate --compile", pyro_vae(True)),
    }


def _time_path(evaluate: Callable, x: torch.Tensor, warmup: torch.Tensor) -> dict[str, Any]:
    device = x.device
    t0 = time.perf_counter()
    evaluate(warmup)
    synchronize(device)
    warmup_seconds = time.perf_counter() - t0
    reset_peak_memory(device)
    before = memory_mb(device)
    pyro.set_rng_seed(0)
    with LoadMonitor() as load:
        t0 = time.perf_counter()
        estimate = evaluate(x)
        synchronize(device)
        seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "warmup_seconds": warmup_seconds,
        "peak_memory_mb": peak_memory_mb(device),
        "extra_peak_memory_mb": peak_memory_mb(device) - before,
        "other_cpu_share": load.other_cpu_share,
        "mean_log_likelihood": float(estimate.mean()),
    }


EVAL_PATHS = (
    "hand-written",
    "hand-written-cache",
    "pyro-vae-before",
    "pyro-vae",
    "pyro-vae-compile",
)


def eval_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options for timing log p(x)."""
    p.add_argument(
        "--eval-images",
        type=at_least(0),
        default=0,
        help=f"also time log p(x) with K={NUM_SAMPLES} on this many test images; 0 skips it",
    )
    p.add_argument(
        "--eval-paths",
        nargs="+",
        default=None,
        choices=EVAL_PATHS,
        metavar="PATH",
        help=f"the log p(x) paths to time, all by default: {', '.join(EVAL_PATHS)}",
    )


def time_log_likelihood(
    data: ImageData,
    opts: dict,
    images: int,
    peak_gflops: float,
    paths: list[str] | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Each evaluation path timed on the first ``images`` test images, one after another."""
    device = torch.device(opts["device"])
    torch.manual_seed(opts["seed"])
    vae = build_vae(data.shape, hidden=opts["hidden"], z_dim=opts["z_dim"]).to(device)
    x = torch.bernoulli(data.test_x[:images].to(device))
    plan = ChunkPlan.for_data(images, NUM_SAMPLES, x[:1].numel() * x.element_size())
    table = eval_paths(vae, plan)
    assert set(table) == set(EVAL_PATHS)
    flops = decoder_flops_per_particle(vae.decoder) * NUM_SAMPLES * images
    results: dict[str, Any] = {}
    with torch.no_grad(), param_store.off():
        for slug in paths or list(table):
            label, evaluate = table[slug]
            res = _time_path(evaluate, x, x[: plan.images])
            res |= {"label": label, "ms_per_image": 1000 * res["seconds"] / images}
            res["decoder_gflops"] = flops / res["seconds"] / 1e9
            res["share_of_peak"] = res["decoder_gflops"] / peak_gflops
            results[slug] = res
            progress(f"log p(x) {slug}: {res['ms_per_image']:.1f} ms/image")
    if "hand-written" in results:
        base = results["hand-written"]["seconds"]
        for res in results.values():
            res["vs_hand_written"] = res["seconds"] / base
    return {
        "images": images,
        "num_samples": NUM_SAMPLES,
        "chunk_plan": [plan.images, plan.particles],
        "decoder_gflop": flops / 1e9,
        "paths": results,
    }


def eval_markdown(result: dict[str, Any]) -> str:
    """The evaluation paths as a table, with the chunk plan and what was counted."""
    images, plan = result["images"], result["chunk_plan"]
    header = (
        f"log p(x) by importance sampling, K={result['num_samples']}, {images} test images, "
        f"{result['decoder_gflop']:.0f} GFLOP of decoder products; cache-sized chunks: "
        f"{plan[0]} image(s) x {plan[1]} particles"
    )
    ratio = "vs_hand_written"
    rows = [{"path": r["label"], **r} for r in result["paths"].values()]
    return markdown_table(
        header,
        [
            ("path", "path", ""),
            ("ms_per_image", "ms/image", ".1f"),
            ("decoder_gflops", "decoder GFLOP/s", ".1f"),
            ("", "% of matmul peak", lambda r: f"{100 * r['share_of_peak']:.1f}%"),
            ("", "time vs hand-written", lambda r: f"{r[ratio]:.2f}x" if ratio in r else "–"),
            ("extra_peak_memory_mb", "extra peak memory (MB)", ".0f"),
            ("warmup_seconds", "warm-up / compile (s)", ".1f"),
            ("mean_log_likelihood", "mean log p(x)", ".2f"),
            ("", "other load", lambda r: f"{r['other_cpu_share']:.1%}"),
        ],
        rows,
    )
