"""The memory of a process and of every process under it, sampled from /proc while it runs:
``RssAnon`` (a counter the kernel keeps) often, ``Pss_Anon`` (a walk of the page tables)
seldom; the peaks over the whole run and over a window of it."""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time

GB = 1e9


def _descendants(pid: int) -> set[int]:
    """Every process under ``pid`` (children, theirs, ...), from the parents in /proc."""
    parents = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{entry}/stat") as f:
            parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
    found, below = {pid}, {pid}
    while below:
        below = {p for p, parent in parents.items() if parent in below} - found
        found |= below
    return found - {pid}


def _kb(pid: int, file: str, key: str) -> int | None:
    with open(f"/proc/{pid}/{file}") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def sample(pid: int, every: float, pss_every: float, done: threading.Event, samples: list) -> None:
    """Append (time, {pid: (RssAnon kB, Pss_Anon kB or None)}) of ``pid`` and of every process
    under it to ``samples``, every ``every`` seconds until ``done`` is set.

    ``RssAnon`` is a counter the kernel keeps; ``Pss_Anon`` is summed by walking the process's
    page tables, which for a memory-mapped 2.35 GB file takes 0.15 s of a core with the
    process's memory-map lock held (measured): read every ``pss_every`` seconds only, so that
    measuring the memory does not slow the run it measures."""
    last_pss = -math.inf
    while not done.is_set():
        now, seen = time.time(), {}
        with_pss = now - last_pss >= pss_every
        for p in [pid, *sorted(_descendants(pid))]:
            with contextlib.suppress(OSError):  # it ended between the listing and the read
                if (rss := _kb(p, "status", "RssAnon")) is not None:  # (None: a zombie)
                    pss = _kb(p, "smaps_rollup", "Pss_Anon") if with_pss else None
                    seen[p] = (rss, pss)
        if seen:
            samples.append((now, seen))
            last_pss = now if with_pss else last_pss
        done.wait(every)


def _peaks(samples: list) -> dict[str, float | None]:
    if not samples:
        return {"rss_anon_sum_peak_gb": None, "pss_anon_sum_peak_gb": None}
    rss = max(sum(r for r, _ in procs.values()) for _, procs in samples)
    read = [procs for _, procs in samples if all(p is not None for _, p in procs.values())]
    pss = max((sum(p for _, p in procs.values()) for procs in read), default=None)
    return {
        "rss_anon_sum_peak_gb": rss * 1024 / GB,
        "pss_anon_sum_peak_gb": None if pss is None else pss * 1024 / GB,
        "pss_samples": len(read),
    }


def memory_report(samples: list, root: int, window: list[float]) -> dict:
    """Peaks over the whole process (its checks of the data before the first step included)
    and over its training steps alone (``window``, wall-clock seconds)."""
    peak: dict[int, int] = {}
    for _, procs in samples:
        for pid, (rss, _) in procs.items():
            peak[pid] = max(peak.get(pid, 0), rss)
    during = [s for s in samples if window[0] <= s[0] <= window[1]]
    return {
        "samples": len(samples),
        "processes_seen": len(peak),
        "most_processes_at_once": max((len(procs) for _, procs in samples), default=0),
        "whole_run": _peaks(samples),
        "training_steps": _peaks(during),
        "trainer_rss_anon_peak_gb": peak.get(root, 0) * 1024 / GB,
        "other_processes_rss_anon_peak_gb": [k * 1024 / GB for p, k in peak.items() if p != root],
    }
