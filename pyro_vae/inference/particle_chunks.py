"""How log p(x)'s K particles per image are cut into chunks, and the compiled chunk.

Each chunk evaluates ``images x particles`` log-weights: the encoder once per image, the
decoder once per particle, and the densities over the decoder's output (for 28x28 images, 784
numbers per particle). The chunk is sized so that the decoder's output stays in the CPU's cache
between the matrix product that writes it and the likelihood that reads it: beyond the cache
every element-wise pass over it is a trip to memory, and a chunk of 100 images x 500 particles
(157 MB of logits) made those passes cost as much as the products.

With ``compile`` the chunk is captured once per shape as an ATen graph and compiled
(:mod:`pyro_vae.inference.graph_compiler`): the likelihood, the prior and posterior densities
and both log-sum-exps fuse into loops around the decoder's products, and Pyro's per-call
machinery runs once instead of once per chunk. The random draws use the eager kernels, so the
compiled and the eager chunk see the same noise for the same seed and give the same estimate.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .graph_compiler import Parameters, capture, compile_graph, owning_modules

# Bytes of decoder output per chunk, as a share of the last-level cache: measured on a 2-core
# EPYC (512 KiB L2 per core, 32 MiB L3) with chunks of 0.8 to 16 MB of logits, the eager loop
# and the compiled chunk both fastest at 8 MB (docs/speed.md, "Evaluation"); smaller chunks pay
# the fixed costs of a chunk more often, larger ones leave the cache.
CACHE_SHARE = 0.25
# At most this many: a virtual machine reads its host's whole last-level cache from sysfs (480
# MiB on a 2-core Xeon VM), most of which other tenants use. There the compiled chunk took
# 17.3-17.7 ms per image at 3-16 MB of logits and 23.1 ms at the quarter, 125 MB.
MAX_CHUNK_BYTES = 8 << 20
FALLBACK_CACHE_BYTES = 32 << 20


@functools.cache
def _cache_bytes() -> int:
    """The last-level cache's size (the largest data or unified cache), from sysfs once per
    process; 32 MiB where it cannot be read."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        value = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
        best = max(best, value)
    return best or FALLBACK_CACHE_BYTES


@dataclass(frozen=True)
class ChunkPlan:
    """Images and particles per chunk; the particle chunks of an image are of equal size
    where K allows, so that one compiled graph serves them all."""

    images: int
    particles: int

    @staticmethod
    def for_data(
        num_images: int, num_samples: int, row_bytes: int, budget_bytes: int | None = None
    ) -> ChunkPlan:
        budget = budget_bytes or min(int(CACHE_SHARE * _cache_bytes()), MAX_CHUNK_BYTES)
        rows = max(1, budget // max(row_bytes, 1))
        pieces = math.ceil(num_samples / rows)
        particles = math.ceil(num_samples / pieces)
        images = max(1, min(num_images, rows // particles))
        return ChunkPlan(images, particles)


def log_weight_sums(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logsumexp_k log w_k and logsumexp_k 2 log w_k per image, in float64: the two sums the
    estimate and its standard error are made of, combined over chunks with ``logaddexp``. The
    log-weights themselves stay in the model's precision; only the sums need float64."""
    log_w = log_w.double()
    return torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)


class CompiledChunk:
    """``chunk(x, particles) -> log_weight_sums(importance_log_weights(...))``, compiled once
    per chunk shape; the parameters of the modules ``model`` and ``guide`` belong to are graph
    inputs, read at every call."""

    def __init__(
        self,
        log_weights: Callable[[torch.Tensor, int], torch.Tensor],
        model: Callable,
        guide: Callable,
        backend: str = "inductor",
    ) -> None:
        self.log_weights = log_weights
        self.parameters = Parameters(owning_modules(model, guide))
        self.backend = backend
        self._graphs: dict[tuple, Callable] = {}

    def __call__(self, x: torch.Tensor, particles: int) -> tuple[torch.Tensor, torch.Tensor]:
        params = [p.detach() for p in self.parameters.current()]
        key = (tuple(x.shape), x.dtype, x.device, particles)
        if key not in self._graphs:

            def sums(params, x):
                with self.parameters.substituted(params):
                    return log_weight_sums(self.log_weights(x, particles))

            graph = capture(sums, params, x)
            self._graphs[key] = compile_graph(graph, self.backend)
        return self._graphs[key](params, x)
