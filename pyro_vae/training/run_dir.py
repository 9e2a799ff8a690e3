"""A run directory on disk, the one lasting record of a run:

    RUN_DIR/config.json      the options the run was started with
    RUN_DIR/metrics.csv      one row per epoch, appended and flushed as each epoch ends
    RUN_DIR/summary.json     final numbers
    RUN_DIR/checkpoint.pt    model, optimizer, random-number states and position
    RUN_DIR/figures/*.png    (drawn by pyro_vae.report)
    RUN_DIR/evaluation.json  (after ``pyro-vae evaluate``)

Every file is written to a temporary name in the same directory, fsync'ed and renamed over the
old one, so a crash at any moment leaves either the previous file or the new one, whole.
:class:`RunDirectory` decides what a run may do with a directory: start afresh, replace a run
(``overwrite``, only once everything else has been checked) or continue one (``resume``).
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

CONFIG, METRICS, SUMMARY, CHECKPOINT, FIGURES, EVALUATION = (
    "config.json",
    "metrics.csv",
    "summary.json",
    "checkpoint.pt",
    "figures",
    "evaluation.json",
)
# what a checkpoint must hold to continue a run
CHECKPOINT_KEYS = {"model", "optimizer", "position", "config", "rng", "metrics"}

_UMASK = os.umask(0)
os.umask(_UMASK)


class RunDirectoryError(ValueError):
    """The run directory cannot be used as asked (exists, empty, corrupt, other config)."""


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


def write_json(path: Path, obj: Any, sort_keys: bool = True) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


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
    write_text(path, buffer.getvalue())


def read_metrics(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


class RunDirectory:
    """One run's directory. Only a process that ``writes`` (rank 0 of several) changes it."""

    def __init__(self, path: str | Path, writes: bool = True) -> None:
        self.path = Path(path)
        self.writes = writes

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def holds_a_run(self) -> bool:
        return any((self.path / name).exists() for name in (CHECKPOINT, METRICS))

    def saved_state(self) -> dict[str, Any]:
        """The checkpoint a resumed run continues from, checked to be whole."""
        checkpoint = self.path / CHECKPOINT
        if not checkpoint.exists():
            raise RunDirectoryError(f"nothing to resume: {str(checkpoint)!r} does not exist")
        try:
            state = load_checkpoint(checkpoint)
            missing = CHECKPOINT_KEYS - set(state)
        except Exception as err:  # torch.load raises many types on a damaged file
            raise RunDirectoryError(f"checkpoint {str(checkpoint)!r} is corrupt ({err})") from None
        if missing:
            raise RunDirectoryError(
                f"checkpoint {str(checkpoint)!r} is incomplete (no {', '.join(sorted(missing))})"
            )
        return state

    def refuse_to_clobber(self) -> None:
        """A new run may not land on an old one unless told to (``overwrite``)."""
        if self.holds_a_run():
            raise RunDirectoryError(
                f"{str(self.path)!r} already holds a run: continue it with --resume, "
                "replace it with --overwrite, or choose another --out"
            )

    def clear(self) -> None:
        """Remove a previous run's record (``--overwrite``; call it once all else is checked)."""
        if self.writes:
            for name in (CHECKPOINT, METRICS, SUMMARY, CONFIG):
                (self.path / name).unlink(missing_ok=True)

    def start(self, config: Mapping[str, Any], fields: list[str], rows: list[dict]) -> None:
        """Lay out the directory for training: config.json, and metrics.csv holding ``rows``
        (a resumed run drops any rows written after its checkpoint)."""
        if not self.writes:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob(".*.tmp"):  # temp files of writes that a kill interrupted
            stale.unlink()
        (self.path / FIGURES).mkdir(exist_ok=True)
        write_json(self.path / CONFIG, dict(config))
        write_metrics(self.path / METRICS, fields, rows)

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        if self.writes:
            save_checkpoint(self.path / CHECKPOINT, state)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        if self.writes:
            write_json(self.path / SUMMARY, dict(summary))

    def metrics_log(self, fields: list[str]) -> MetricsLog:
        return MetricsLog(self.path / METRICS, fields)
