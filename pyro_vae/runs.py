"""A run directory on disk: config, per-epoch metrics, summary, checkpoint, figures.

    RUN_DIR/config.json      the configuration the run was started with
    RUN_DIR/metrics.csv      one row per epoch, appended and flushed as each epoch ends
    RUN_DIR/summary.json     final numbers
    RUN_DIR/checkpoint.pt    model, optimizer, RNG state and position; written atomically
    RUN_DIR/figures/*.png

Files are written to a temporary name in the same directory, fsync'ed and renamed over the
old one, so a crash at any moment leaves either the previous file or the new one, whole.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch

CONFIG, METRICS, SUMMARY, CHECKPOINT, FIGURES = (
    "config.json",
    "metrics.csv",
    "summary.json",
    "checkpoint.pt",
    "figures",
)


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` so that readers never see a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json(path: Path, obj: Any) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(dict(state), f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=False)


class MetricsLog:
    """Appends one CSV row per epoch and flushes it, so a killed run keeps its history."""

    def __init__(self, path: Path, fields: list[str]) -> None:
        self.path = Path(path)
        self.fields = fields
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=fields)
        if new:
            self._writer.writeheader()

    def append(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow({k: row.get(k, "") for k in self.fields})
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def write_metrics(path: Path, fields: list[str], rows: list[Mapping[str, Any]]) -> None:
    """Replace the CSV with exactly ``rows`` (a resumed run drops rows past its checkpoint)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in fields})
    data = buffer.getvalue().encode()
    atomic_write(path, lambda f: f.write(data))


def read_metrics(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
