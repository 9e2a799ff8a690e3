"""A data source the user brings: its rows (compact), labels if any, the split, and the record
of where it came from.

``open_source(path)`` chooses the reader by what the path is (a folder of images, ``.npy``,
``.npz``, HDF5, ``.h5ad``, a CSV/TSV/Parquet table: :data:`READERS`); ``from_python`` wraps
what a Python caller passes (a tensor or array, a ``Dataset``, a ``DataLoader``). The test
split is the source's own when it has one, else a seeded ``test_fraction`` of its rows
(:func:`split_source`). :func:`materialize` makes the float32 tensors of the device-resident
path; :mod:`pyro_vae.data.sources.stream` streams the same rows when they do not fit.

The record (:meth:`DataSource.record`) goes into the run's config.json; a command that reads
the run opens the source again and compares (:func:`check_record`), so ``evaluate``,
``report``, ``sample`` and ``--resume`` read the same data or refuse in one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...registry import takes
from ..datasets import DataError, ImageData
from .rows import Rows

log = logging.getLogger("pyro_vae")


def warn_data(message: str) -> None:
    """A warning about the data a reader read (what it skipped or left out): the command
    line prints it as one ``pyro-vae:`` line, Python code receives it through ``logging``."""
    log.warning(message)


# what the stored values are: "8-bit" (integers 0..255: intensities unless a count
# likelihood reads them), "counts" (non-negative integers, never rescaled), "real" (as stored)
VALUE_KINDS = ("8-bit", "counts", "real")
FILE_EXTRAS = ("h5py", "anndata", "pyarrow")  # what the files extra installs (pyproject.toml)
SAMPLED_BYTES = 1 << 20  # a file's content hash reads its first and last MiB (and its size)
CHUNK_ROWS = 65_536  # rows converted at a time when a source is gathered into memory


@dataclass
class DataSource:
    """Rows from one place, with what a run records of them (see the module doc)."""

    name: str  # the path (or "given"), for messages
    format: str  # the reader: "npy", "npz", "hdf5", "images", "h5ad", "table", "given"
    train: Rows
    test: Rows | None = None  # None: split off by test_fraction (split_source)
    train_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    values: str = "real"
    facts: dict[str, Any] = field(default_factory=dict)  # the reader's: key, layout, files
    split: dict[str, Any] = field(default_factory=dict)  # how the test split was made
    fingerprint: dict[str, Any] = field(default_factory=dict)  # path, size, mtime, sha256

    @property
    def shape(self) -> tuple[int, ...]:
        return self.train.item_shape

    def record(self) -> dict[str, Any]:
        """What config.json keeps of the source: enough to find it and know it again."""
        return {
            "format": self.format,
            **self.fingerprint,
            **self.facts,
            "shape": list(self.shape),
            "dtype": str(self.train.dtype),
            "values": self.values,
            "train": len(self.train),
            "test": len(self.test) if self.test is not None else 0,
            "split": self.split,
        }

    def float_bytes(self) -> int:
        """The size of every row as float32, as the device-resident path holds it."""
        n = len(self.train) + (len(self.test) if self.test is not None else 0)
        return 4 * n * self.train.width


# --- readers by what the path is -------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    """A reader: which paths it takes, and how it opens one (``options``: the run's data
    options it uses, by keyword)."""

    name: str
    matches: Callable[[Path], bool]
    open: Callable[..., DataSource]
    extra: str = ""  # the optional dependency, for the message when it is missing


READERS: dict[str, Reader] = {}


def reader(name: str, matches: Callable[[Path], bool], extra: str = "") -> Callable:
    """Decorator: register ``open(path, **options) -> DataSource`` as the reader ``name``."""

    def decorate(open_: Callable[..., DataSource]) -> Callable[..., DataSource]:
        READERS[name] = Reader(name, matches, open_, extra)
        return open_

    return decorate


def suffix_in(*suffixes: str) -> Callable[[Path], bool]:
    return lambda p: p.is_file() and any(p.name.lower().endswith(s) for s in suffixes)


def open_source(path: str | Path, **options: Any) -> DataSource:
    """The source at ``path``, read by the reader its kind calls for (one line if none)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"--data {str(path)!r} does not exist")
    for entry in READERS.values():
        if entry.matches(path):
            taken = {k: v for k, v in options.items() if takes(entry.open, k)}
            try:
                source = entry.open(path, **taken)
            except ModuleNotFoundError as err:
                extra = (
                    "pip install 'pyro-vae[files]'"
                    if err.name in FILE_EXTRAS
                    else (f"pip install {err.name}")
                )
                raise DataError(
                    f"reading {entry.name} files needs the {err.name} package: {extra}"
                ) from None
            source.fingerprint = fingerprint(path)
            return source
    kinds = ", ".join(READERS)
    raise DataError(f"--data {str(path)!r}: not a kind of data pyro-vae reads ({kinds})")


def fingerprint(path: Path) -> dict[str, Any]:
    """Path, size, modification time and a content hash of a file (its size, first and last
    MiB) or of a folder (every file's relative name, size and time): cheap for any size, and
    it changes when the data do."""
    path = path.resolve()
    digest = hashlib.sha256()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        size, mtime = 0, 0
        for p in files:
            stat = p.stat()
            size, mtime = size + stat.st_size, max(mtime, stat.st_mtime_ns)
            digest.update(f"{p.relative_to(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        return {"path": str(path), "bytes": size, "files": len(files), "sha256": digest.hexdigest()}
    stat = path.stat()
    with open(path, "rb") as f:
        digest.update(f.read(SAMPLED_BYTES))
        if stat.st_size > 2 * SAMPLED_BYTES:
            f.seek(-SAMPLED_BYTES, os.SEEK_END)
            digest.update(f.read(SAMPLED_BYTES))
    digest.update(str(stat.st_size).encode())
    return {
        "path": str(path),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": digest.hexdigest(),
    }


def check_record(saved: dict[str, Any], source: DataSource) -> None:
    """The source opened now is the one the run recorded, or one line saying what differs."""
    now = source.record()
    keys = [k for k in ("sha256", "bytes", "shape", "dtype", "values", "train", "test")
            if k in saved and saved[k] != now.get(k)]  # fmt: skip
    if keys:
        what = "; ".join(f"{k} {saved[k]!r} then, {now.get(k)!r} now" for k in keys)
        raise DataError(
            f"{source.name!r} is not the data this run was trained on ({what}): give the run's "
            "own data, or train a new run"
        )


# --- the split -------------------------------------------------------------------------------


def split_source(source: DataSource, test_fraction: float, seed: int) -> DataSource:
    """The source with its test split: its own when it has one, else ``test_fraction`` of its
    rows, chosen by a permutation seeded with ``seed`` (recorded: the same rows on resume and
    evaluate). Rows keep their file order within each split (a memory map reads it fastest)."""
    if source.test is not None:
        return dataclasses.replace(source, split={"from": "source"})
    n = len(source.train)
    if not 0 < test_fraction < 1:
        raise DataError(f"--test-fraction must lie in (0, 1), not {test_fraction}")
    n_test = math.ceil(test_fraction * n)
    if n - n_test < 1 or n_test < 1:
        raise DataError(
            f"{source.name}: {n} rows cannot be split into training and test rows with "
            f"--test-fraction {test_fraction}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    labels = source.train_labels
    return dataclasses.replace(
        source,
        train=source.train.subset(train_idx),
        test=source.train.subset(test_idx),
        train_labels=None if labels is None else labels[train_idx],
        test_labels=None if labels is None else labels[test_idx],
        split={"from": "test_fraction", "test_fraction": test_fraction, "seed": seed},
    )


# --- into memory -----------------------------------------------------------------------------


def value_scale(source: DataSource, counts: bool) -> float | None:
    """What stored values are multiplied by for the model: 1/255 for 8-bit intensities (into
    [0, 1]), nothing for counts (a count likelihood reads 8-bit values as counts: integer
    counts are never rescaled) or real values."""
    return 1.0 / 255.0 if source.values == "8-bit" and not counts else None


def to_float(batch: np.ndarray | torch.Tensor, scale: float | None) -> torch.Tensor:
    """A compact batch as the model's flat float32 rows."""
    x = torch.as_tensor(batch)
    x = x.reshape(x.shape[0], -1).to(torch.float32)
    return x.mul_(scale) if scale is not None else x


def gather(rows: Rows, scale: float | None) -> torch.Tensor:
    """Every row as float32, converted a chunk at a time into one buffer (no second copy)."""
    out = torch.empty(len(rows), rows.width, dtype=torch.float32)
    for start in range(0, len(rows), CHUNK_ROWS):
        index = np.arange(start, min(start + CHUNK_ROWS, len(rows)), dtype=np.int64)
        out[start : start + len(index)] = to_float(rows.read(index), scale)
    return out


def _labels(labels: np.ndarray | None, n: int) -> torch.Tensor:
    """Labels as long integers; a source without labels gets zeros (labels are optional)."""
    return torch.zeros(n, dtype=torch.long) if labels is None else torch.as_tensor(labels).long()


def materialize(source: DataSource, counts: bool = False) -> ImageData:
    """The split source as in-memory float32 tensors (the device-resident path)."""
    if source.test is None:
        raise ValueError("split the source first (split_source)")
    scale = value_scale(source, counts)
    train_x, test_x = gather(source.train, scale), gather(source.test, scale)
    return ImageData(
        train_x,
        _labels(source.train_labels, len(train_x)),
        test_x,
        _labels(source.test_labels, len(test_x)),
        shape=tuple(source.shape),
        name=source.name,
    ).validate()


# --- how much memory the data may take ---------------------------------------------------------

SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """Bytes of a size written as ``1.5G``, ``500M``, ``2048`` (binary units, B optional)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in SIZE_UNITS and t[-1:] else ""
    number = float(t[: len(t) - len(unit)])
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"not a positive size: {text!r}")
    return int(number * SIZE_UNITS[unit])


def valid_size(text: str) -> bool:
    try:
        parse_size(text)
    except (ValueError, IndexError):
        return False
    return True


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device`` now: CUDA's free memory, or the host's available memory
    (``MemAvailable`` of /proc/meminfo; the physical memory where that cannot be read)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_budget(budget: str | None, device: torch.device) -> int:
    """The bytes the data may take on ``device``: ``budget`` when given, else half the free
    memory (the model, its activations and the optimizer need the rest)."""
    return parse_size(budget) if budget is not None else free_memory(device) // 2
