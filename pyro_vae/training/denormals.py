"""Denormal floats read and written as zero on every CPU thread that computes.

A float32 below 2^-126 (about 1.2e-38) is *denormal*; on x86 each arithmetic operation on one
takes a microcode assist, tens of times a normal one. A VAE's training makes them: Adam's first
moment m_t = β1 m_{t-1} + (1 - β1) g_t of a weight whose gradient stays 0 (the first layer's
weights of a pixel that is blank in every image of the batch, as Fashion-MNIST's borders are)
decays by β1 = 0.9 a step, and reaches the denormal range about 800 steps after its last
non-zero gradient. It never leaves it: 0.9 × 4·2^-149 rounds back to 4·2^-149, so the moment
stays denormal until its weight gets a gradient again. After six epochs of Fashion-MNIST 18%
of the first layer's moments were denormal, and the fused Adam step took twice as long.

Flush-to-zero (FTZ: a denormal result is written as 0) and denormals-are-zero (DAZ: a denormal
input is read as 0) are bits of each thread's MXCSR register. JAX (XLA) sets them on the CPU,
so NumPyro trains with them; ``torch.set_flush_denormal`` sets them on the calling thread only,
and the OpenMP threads that run half of every parallel kernel keep theirs. So
:func:`flushed_denormals` sets them on each thread of the OpenMP team: it opens one parallel
region through the OpenMP runtime's ``GOMP_parallel`` (the entry point ``#pragma omp
parallel`` compiles to) whose body calls ``torch.set_flush_denormal`` on its own thread. No
library does this for torch's threads, hence by hand.

What it changes: a value that would have been denormal is 0. A denormal is below 1.2e-38, so
it changes a sum only when it is all the sum is; the default run's numbers are unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

DENORMALS = ("flush", "keep")

_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


# the OpenMP runtimes torch is built with; Intel's and LLVM's also export GOMP_parallel
_RUNTIMES = ("libgomp", "libiomp", "libomp")


@functools.cache
def _openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime this process has loaded (libgomp in torch's wheels), or None."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    for line in maps.read_text().splitlines():
        path = line.split()[-1]
        if os.path.basename(path).startswith(_RUNTIMES):
            lib = ctypes.CDLL(path)
            if hasattr(lib, "GOMP_parallel"):
                lib.GOMP_parallel.argtypes = [_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
                lib.GOMP_parallel.restype = None
                return lib
    return None


def on_every_thread(fn: Callable[[], object]) -> int:
    """Run ``fn`` once on each thread of torch's OpenMP team (the calling thread included);
    return how many threads ran it (1 where there is no libgomp: the calling thread only)."""
    runtime = _openmp_runtime()
    if runtime is None or torch.get_num_threads() == 1:
        fn()
        return 1
    ran: list[int] = []

    def body(_: int | None) -> None:
        fn()
        ran.append(1)

    keep = _BODY(body)  # held until the region ends
    runtime.GOMP_parallel(keep, None, torch.get_num_threads(), 0)
    return len(ran)


def flushing() -> bool:
    """Whether the calling thread reads a denormal as zero."""
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    return bool((tiny * 1.0).item() == 0.0)


@contextlib.contextmanager
def flushed_denormals(enabled: bool = True) -> Iterator[None]:
    """Within the block, every CPU thread of torch's team flushes denormals to zero (see the
    module doc); the mode found on entry is put back on exit. ``enabled=False``: a no-op."""
    if not enabled:
        yield
        return
    before = flushing()
    on_every_thread(lambda: torch.set_flush_denormal(True))
    try:
        yield
    finally:
        on_every_thread(lambda: torch.set_flush_denormal(before))
