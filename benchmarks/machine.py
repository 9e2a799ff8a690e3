"""What the machine is and what else it is doing while something is timed: CPU time of other
processes (a busy machine makes a timing worthless), memory in use and at its peak, and the
rate of its float32 matrix products (what a training step's FLOPs are measured against)."""

from __future__ import annotations

import ctypes
import os
import platform
import time
from typing import Any

import torch


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


def matmul_peak_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 matmul rate in GFLOP/s: ``a @ b`` of two n x n matrices costs
    2 n^3 flops; after one warm-up product, the best of ``repeats`` timed ones, on torch's
    threads (as the paths use them)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device)
    b = torch.randn(n, n, generator=g, device=device)
    best = float("inf")
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
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
