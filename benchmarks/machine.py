"""What the machine is and what else it is doing while something is timed: CPU time of other
processes (a busy machine makes a timing worthless), memory in use and at its peak, and the
rate of its float32 matrix products (what a training step's FLOPs are measured against)."""

from __future__ import annotations

import ctypes
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

from pyro_vae.kernels.matmul_choice import onednn_available, onednn_mm

# the matmul peak: the best of PEAK_REPEATS products of two PEAK_MATMUL_SIZE-square float32
# matrices, after one warm-up (about 0.5 s on two cores)
PEAK_MATMUL_SIZE, PEAK_REPEATS = 2048, 5


def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def process_cpu_seconds() -> float:
    """CPU seconds this process has used so far, all its threads (torch's, XLA's) together."""
    return _own_cpu_seconds()


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


def _release_freed_memory() -> None:
    """Hand the memory freed so far back to the OS (glibc's ``malloc_trim``), so that the
    resident set measures what is in use now rather than what an earlier measurement left in
    the allocator's free lists; a no-op without glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _release_freed_memory()
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


def memory_mb(device: torch.device) -> float:
    """Memory in use now: allocated by torch on CUDA, resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return _proc_status_mb("VmRSS")


def peak_memory_mb(device: torch.device) -> float:
    """Peak since the last reset: torch's allocator on CUDA, the RSS high-water mark on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _proc_status_mb("VmHWM")


def matmul_peak_gflops(
    device: torch.device, n: int = 2048, repeats: int = 5, product: Callable = torch.mm
) -> float:
    """The machine's float32 matmul rate in GFLOP/s: ``product(a, b)`` (``a @ b`` by torch's
    BLAS unless told) of two n x n matrices costs 2 n^3 flops; after one warm-up product, the
    best of ``repeats`` timed ones, on torch's threads (as the paths use them)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device)
    b = torch.randn(n, n, generator=g, device=device)
    best = float("inf")
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        product(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first is the warm-up
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _blas() -> str:
    """The BLAS torch was built with (``BLAS_INFO`` of its build settings: mkl, openblas, ...)."""
    settings = torch.__config__.show()
    return next(
        (
            part.split("=", 1)[1]
            for part in settings.replace(",", " ").split()
            if "BLAS_INFO=" in part
        ),
        "unknown",
    )


def machine_info(device: torch.device) -> dict[str, Any]:
    """The CPU model, its vector ISA as torch dispatches to it (AVX2, AVX512, ...), the BLAS,
    the thread count and versions: what a timing is only valid beside."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "vector_isa": torch.backends.cpu.get_cpu_capability(),
        "blas": _blas(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def machine_block(device: torch.device) -> dict[str, dict[str, Any]]:
    """``{"machine": ...}`` for a benchmark's JSON: :func:`machine_info` with the float32
    matmul rate (:func:`matmul_peak_gflops`) as ``matmul_peak_gflops``, and under
    ``matmul_peak`` its size, repeats and the CPU share other processes used meanwhile.
    Measured once, now: call it before the timings, never among them."""
    with LoadMonitor() as load:
        gflops = matmul_peak_gflops(device, PEAK_MATMUL_SIZE, PEAK_REPEATS)
        onednn = None
        if device.type == "cpu" and onednn_available():
            onednn = matmul_peak_gflops(device, PEAK_MATMUL_SIZE, PEAK_REPEATS, onednn_mm)
    peak = {"n": PEAK_MATMUL_SIZE, "repeats": PEAK_REPEATS}
    peak["other_cpu_share"] = load.other_cpu_share
    rates = {"matmul_peak_gflops": gflops, "onednn_matmul_gflops": onednn, "matmul_peak": peak}
    return {"machine": machine_info(device) | rates}


def machine_line(machine: dict[str, Any]) -> str:
    """A machine block (``machine_block(...)["machine"]``) as one line, for a table's header
    or a printed summary: "AMD EPYC 7B13, AVX512, BLAS mkl, 2 threads, matmul 185 GFLOP/s
    (oneDNN 420) (float32 2048x2048 a @ b)": torch's BLAS, and oneDNN, which the compiled
    graphs use for the shapes it multiplies faster (the GPU's name instead of the CPU's on
    CUDA)."""
    n = machine.get("matmul_peak", {}).get("n", "?")
    onednn = machine.get("onednn_matmul_gflops")
    return (
        f"{machine.get('gpu', machine['cpu'])}, {machine.get('vector_isa', '?')}, BLAS "
        f"{machine.get('blas', '?')}, {machine['torch_threads']} threads, matmul "
        f"{machine['matmul_peak_gflops']:.0f} GFLOP/s"
        + (f" (oneDNN {onednn:.0f})" if onednn else "")
        + f" (float32 {n}x{n} a @ b)"
    )
