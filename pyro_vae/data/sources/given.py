"""Data passed from Python: a tensor or array, a pair of them (train, test), an AnnData or
SciPy sparse matrix, a ``torch.utils.data.Dataset`` or a ``DataLoader``.

A ``DataLoader``'s own order and batch size are not used: the run draws its own seeded order
(what makes it reproducible and resumable) from the loader's ``dataset``. Items of a
``Dataset`` are a row, or a tuple whose first element is the row; labels of a ``Dataset`` are
not read (that would read every item; labels are optional).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..datasets import DataError, ImageData
from .arrays import value_kind
from .rows import ArrayRows, Rows, image_layout
from .source import DataSource

HASHED_BYTES = 1 << 29  # arrays up to 512 MiB are hashed whole, larger ones by their ends
GIVEN = "given"


class DatasetRows(Rows):
    """The rows of a map-style ``Dataset`` (each item a row, or a tuple starting with it)."""

    start_method = "fork"  # the user's Dataset need not pickle: workers get it by fork

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        first = self._item(0)
        item, self.layout = image_layout(tuple(first.shape), "auto", type(dataset).__name__)
        self.item_shape, self.dtype = item, first.dtype

    def _item(self, i: int) -> np.ndarray:
        item = self.dataset[i]
        if isinstance(item, (tuple, list)):
            item = item[0]
        return np.asarray(item.numpy() if isinstance(item, torch.Tensor) else item)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def read(self, index: np.ndarray) -> np.ndarray:
        block = np.stack([self._item(int(i)) for i in index])
        if self.layout == "nhwc":
            block = block.transpose(0, 3, 1, 2)
        return block.reshape(len(index), *self.item_shape)


class SparseRows(Rows):
    """Rows of a SciPy sparse matrix, kept sparse (CSR) and made dense a batch at a time."""

    start_method = "fork"  # (held in memory: shared with the workers, not copied to each)

    def __init__(self, matrix: Any) -> None:
        self.matrix = matrix.tocsr()
        self.item_shape, self.dtype = (int(matrix.shape[1]),), np.dtype(matrix.dtype)

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def read(self, index: np.ndarray) -> np.ndarray:
        return self.matrix[np.asarray(index, dtype=np.int64)].toarray()


def _rows_of(obj: Any, layout: str) -> Rows:
    if isinstance(obj, DataLoader):
        obj = obj.dataset
    if type(obj).__name__ == "AnnData":
        obj = obj.X
    if hasattr(obj, "tocsr") and hasattr(obj, "shape"):  # a SciPy sparse matrix
        return SparseRows(obj)
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        if obj.ndim < 2 or obj.shape[0] == 0:
            raise DataError(f"data: give one row per item; got an array of shape {obj.shape}")
        item, how = image_layout(tuple(obj.shape[1:]), layout, "data")
        return ArrayRows(obj, item, how)
    if isinstance(obj, Dataset) and hasattr(obj, "__len__"):
        return DatasetRows(obj)
    raise DataError(
        f"data: cannot train on a {type(obj).__name__}; give a tensor or array (rows), a pair "
        "(train, test), an AnnData, a Dataset, a DataLoader, or pyro_vae.ImageData"
    )


def content_hash(rows: Rows) -> str | None:
    """A hash of an in-memory array's bytes (whole up to 512 MiB, else its ends), or None for
    rows that are not one array (a Dataset's)."""
    if isinstance(rows, SparseRows):
        parts = [rows.matrix.data, rows.matrix.indices, rows.matrix.indptr]
    elif isinstance(rows, ArrayRows) and isinstance(rows.array, np.ndarray):
        parts = [np.ascontiguousarray(rows.array)]
    else:
        return None
    digest = hashlib.sha256()
    for a in parts:
        raw = memoryview(a).cast("B")
        digest.update(raw if raw.nbytes <= HASHED_BYTES else bytes(raw[:HASHED_BYTES]))
    return digest.hexdigest()


def image_data_hash(data: ImageData) -> str:
    digest = hashlib.sha256()
    for t in (data.train_x, data.test_x):
        digest.update(t.detach().cpu().contiguous().numpy().tobytes()[:HASHED_BYTES])
    return digest.hexdigest()


def from_python(data: Any, layout: str = "auto") -> DataSource:
    """A source of what a Python caller passed (see the module doc)."""
    if isinstance(data, tuple) and len(data) == 2:
        train, test = _rows_of(data[0], layout), _rows_of(data[1], layout)
        if train.item_shape != test.item_shape:
            raise DataError(
                f"data: train and test rows differ in shape: {train.item_shape} vs "
                f"{test.item_shape}"
            )
    else:
        train, test = _rows_of(data, layout), None
    hashes = [content_hash(r) for r in (train, test) if r is not None]
    facts: dict[str, Any] = {"kind": type(data).__name__}
    if all(hashes):
        facts["sha256"] = hashlib.sha256("".join(hashes).encode()).hexdigest()
    values = value_kind(np.dtype(train.dtype))
    return DataSource(GIVEN, GIVEN, train, test, values=values, facts=facts)
