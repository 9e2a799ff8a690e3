"""Arrays: ``.npy`` (memory-mapped), ``.npz`` and HDF5.

One array of rows, or a source with its own split: ``train_x`` / ``test_x`` (and optional
``train_y`` / ``test_y`` labels) as in the ``npz`` dataset. ``--data-key`` names the array of
rows where a file holds several; labels of a single array are an array named ``y`` or
``labels`` of one whole number per row, when there is one (labels are optional).

Rows are (D,) vectors, (H, W) grey images, or (C, H, W) / (H, W, C) images, told apart by
:func:`~pyro_vae.data.sources.rows.image_layout` or ``--layout``. uint8 values are 8-bit
(intensities in [0, 1] for the model, unless a count likelihood reads them as counts); other
integer types are counts; floats are read as stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import DataError
from .rows import ArrayRows, image_layout
from .source import DataSource, reader, suffix_in

SPLIT_KEYS = ("train_x", "test_x")
LABEL_KEYS = ("y", "labels")


def value_kind(dtype: np.dtype) -> str:
    """What a stored type means (see the module doc)."""
    if dtype == np.uint8:
        return "8-bit"
    return "counts" if np.issubdtype(dtype, np.integer) else "real"


def _rows(array: Any, name: str, key: str, layout: str) -> ArrayRows:
    kind = np.dtype(array.dtype).kind
    if kind not in "buif":
        raise DataError(f"{name}: {key} has dtype {array.dtype}; rows must hold numbers")
    if len(array.shape) < 2 or array.shape[0] == 0 or int(np.prod(array.shape[1:])) == 0:
        raise DataError(f"{name}: {key} holds no rows of values (shape {tuple(array.shape)})")
    item, how = image_layout(tuple(int(s) for s in array.shape[1:]), layout, f"{name}: {key}")
    return ArrayRows(array, item, how)


def _labels(arrays: dict[str, Any], key: str | None, n: int, name: str) -> np.ndarray | None:
    if key is None:
        return None
    y = np.asarray(arrays[key])
    if y.shape != (n,):
        raise DataError(f"{name}: {n} rows but {key} has shape {y.shape}: one label per row")
    if y.dtype.kind not in "iub" and not (
        y.dtype.kind == "f" and np.all(np.isfinite(y) & (y == np.round(y)))
    ):
        raise DataError(f"{name}: {key} must hold whole numbers (class labels)")
    return y.astype(np.int64)


def _from_arrays(
    arrays: dict[str, Any], name: str, fmt: str, data_key: str | None, layout: str
) -> DataSource:
    """A source from named arrays (an ``.npz``'s members, an HDF5 file's datasets)."""
    keys = sorted(arrays)
    if data_key is None and all(k in arrays for k in SPLIT_KEYS):
        train = _rows(arrays["train_x"], name, "train_x", layout)
        test = _rows(arrays["test_x"], name, "test_x", layout)
        if train.item_shape != test.item_shape:
            raise DataError(
                f"{name}: train and test rows differ in shape: {train.item_shape} vs "
                f"{test.item_shape}"
            )
        return DataSource(
            name, fmt, train, test,
            _labels(arrays, "train_y" if "train_y" in arrays else None, len(train), name),
            _labels(arrays, "test_y" if "test_y" in arrays else None, len(test), name),
            values=value_kind(train.dtype),
            facts={"keys": ["train_x", "test_x"], "layout": train_layout(train)},
        )  # fmt: skip
    if data_key is None:
        candidates = [k for k in keys if k not in LABEL_KEYS]
        if len(candidates) != 1:
            raise DataError(
                f"{name} holds {', '.join(keys) or 'no arrays'}: name the rows with --data-key "
                "(or store train_x and test_x)"
            )
        data_key = candidates[0]
    if data_key not in arrays:
        raise DataError(f"{name} has no array {data_key!r}; it holds: {', '.join(keys)}")
    rows = _rows(arrays[data_key], name, data_key, layout)
    label_key = next((k for k in LABEL_KEYS if k in arrays and k != data_key), None)
    return DataSource(
        name,
        fmt,
        rows,
        train_labels=_labels(arrays, label_key, len(rows), name),
        values=value_kind(rows.dtype),
        facts={"key": data_key, "layout": train_layout(rows)},
    )


def train_layout(rows: ArrayRows) -> str:
    return rows.layout


@reader("npy", suffix_in(".npy"))
def open_npy(path: Path, *, layout: str = "auto") -> DataSource:
    """One array of rows, memory-mapped: it is read from disk a batch at a time."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"npy: cannot read {str(path)!r} ({err})") from None
    return _from_arrays({"x": array}, str(path), "npy", "x", layout)


@reader("npz", suffix_in(".npz"))
def open_npz(path: Path, *, data_key: str | None = None, layout: str = "auto") -> DataSource:
    """Named arrays, read into memory as stored (compact); a large array wants ``.npy``."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except Exception as err:  # a damaged archive fails zipfile, zlib or numpy in many ways
        raise DataError(f"npz: cannot read {str(path)!r} ({type(err).__name__}: {err})") from None
    return _from_arrays(arrays, str(path), "npz", data_key, layout)


@reader("hdf5", suffix_in(".h5", ".hdf5", ".hdf"), extra="files")
def open_hdf5(path: Path, *, data_key: str | None = None, layout: str = "auto") -> DataSource:
    """Datasets of an HDF5 file, read a batch at a time (``--data-key``: a dataset's path in
    the file, ``group/name``)."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"hdf5: cannot read {str(path)!r} ({err})") from None
    arrays: dict[str, Any] = {}

    def keep(key: str, item: Any) -> None:  # (visititems stops at a callback's first non-None)
        if isinstance(item, h5py.Dataset):
            arrays[key] = item

    handle.visititems(keep)
    source = _from_arrays(arrays, str(path), "hdf5", data_key, layout)
    for rows in (source.train, source.test):
        if rows is not None:
            rows.array = H5Array(str(path), rows.array.name)
    return source


class H5Array:
    """An HDF5 dataset that reopens its file in each process (``DataLoader`` workers get a
    pickled copy; an open h5py handle cannot travel)."""

    def __init__(self, path: str, key: str) -> None:
        import h5py

        self.path, self.key = path, key
        with h5py.File(path, "r") as f:
            self.shape, self.dtype = f[key].shape, f[key].dtype
        self._data = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}

    def __getitem__(self, index: Any) -> np.ndarray:
        if self._data is None:
            import h5py

            self._data = h5py.File(self.path, "r")[self.key]
        return self._data[index]
