"""AnnData ``.h5ad`` count matrices, read a batch of rows at a time.

The counts are ``X`` or the layer ``data_key`` names (``layers/counts`` is where raw counts
usually live when ``X`` holds normalised values). The file is read with h5py directly, never
densified whole: a CSR matrix (the usual encoding) keeps only its row pointers in memory and
reads the stored values of the rows a batch asks for; a dense ``X`` is read by rows; a CSC
matrix is converted to CSR in memory once (column-major storage cannot be read by rows).

Every stored value must be a count (a non-negative whole number; float32 counts are common
and kept as stored): checked at open, a chunk at a time; the first bad value is named by its
row and column, or ``skip_bad`` drops the rows holding one. Rows carry no labels.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import DataError
from .rows import ArrayRows, Rows
from .source import DataSource, reader, suffix_in, warn_data

CHECK_VALUES = 1 << 22  # stored values checked at a time at open
GAP = 1 << 14  # stored values read past between two rows asked for, rather than read twice


class H5Node:
    """A dataset or group of an HDF5 file, opened in the process that reads it: ``DataLoader``
    workers get a pickled (or forked) copy, and an open h5py handle travels in neither."""

    def __init__(self, path: str, key: str) -> None:
        self.path, self.key = path, key
        self._file: Any = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": -1}

    def get(self) -> Any:
        if self._file is None or self._pid != os.getpid():  # first read in this process
            import h5py

            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file[self.key]


class H5Dense(H5Node):
    """A dense 2-D dataset as :class:`~pyro_vae.data.sources.rows.ArrayRows` slices it."""

    def __init__(self, path: str, key: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        super().__init__(path, key)
        self.shape, self.dtype = shape, dtype

    def __getitem__(self, index: Any) -> np.ndarray:
        return self.get()[index]


class CsrRows(Rows):
    """Rows of a CSR matrix stored in an HDF5 group (``data``, ``indices``, ``indptr``): only
    ``indptr`` is held in memory; a batch reads the stored values of its rows (one read per
    run of nearby rows) and densifies just those rows."""

    def __init__(self, node: H5Node, indptr: np.ndarray, n_vars: int, dtype: np.dtype) -> None:
        self.node, self.indptr = node, indptr
        self.item_shape, self.dtype = (n_vars,), np.dtype(dtype)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def read(self, index: np.ndarray) -> np.ndarray:
        import scipy.sparse

        unique, back = _unique_rows(index, len(self))
        starts, ends = self.indptr[unique], self.indptr[unique + 1]
        local = np.concatenate([[0], np.cumsum(ends - starts)])
        data, cols = self._gather(starts, ends, local)
        block = scipy.sparse.csr_matrix(
            (data, cols, local), shape=(len(unique), self.item_shape[0])
        ).toarray()
        return block[back]

    def _gather(
        self, starts: np.ndarray, ends: np.ndarray, local: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The stored values and column indices of rows ``[starts, ends)`` (sorted rows), one
        after another."""
        if len(starts) == 0:
            return np.zeros(0, self.dtype), np.zeros(0, np.int64)
        group = self.node.get()
        new = np.ones(len(starts), dtype=bool)
        new[1:] = starts[1:] - ends[:-1] > GAP
        firsts = np.flatnonzero(new)
        lo, hi = starts[firsts], ends[np.append(firsts[1:] - 1, len(starts) - 1)]
        spans = [slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True)]
        data = np.concatenate([group["data"][span] for span in spans])
        cols = np.concatenate([group["indices"][span] for span in spans])
        run = np.cumsum(new) - 1
        offset = np.concatenate([[0], np.cumsum(hi - lo)])[run]
        at = offset + starts - lo[run]  # where each row's values begin in data and cols
        pos = np.repeat(at - local[:-1], ends - starts) + np.arange(local[-1])
        return data[pos], cols[pos]


class SparseRows(Rows):
    """Rows of a CSR matrix held in memory (a CSC matrix, converted once at open)."""

    start_method = "fork"  # (held in memory: shared with the workers, not copied to each)

    def __init__(self, matrix: Any) -> None:
        self.matrix = matrix
        self.item_shape, self.dtype = (int(matrix.shape[1]),), np.dtype(matrix.dtype)

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def read(self, index: np.ndarray) -> np.ndarray:
        unique, back = _unique_rows(index, len(self))
        return self.matrix[unique].toarray()[back]


def _unique_rows(index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct rows of ``index`` and where each asked row lies among them."""
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    unique, back = np.unique(index, return_inverse=True)
    if len(unique) and (unique[0] < 0 or unique[-1] >= n):
        raise IndexError(f"row index out of range for {n} rows")
    return unique, back.reshape(-1)


def _bad(values: np.ndarray) -> np.ndarray:
    """Where ``values`` are not counts (negative, not whole, not finite)."""
    if values.dtype.kind in "ub":
        return np.zeros(values.shape, dtype=bool)
    if values.dtype.kind == "i":
        return values < 0
    return ~np.isfinite(values) | (values < 0) | (values != np.floor(values))


def _attr(node: Any, key: str) -> str:
    value = node.attrs.get(key, "")
    return value.decode() if isinstance(value, bytes) else str(value)


def _strings(dataset: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in dataset[()]]


@reader("h5ad", suffix_in(".h5ad"), extra="files")
def open_h5ad(path: Path, *, data_key: str | None = None, skip_bad: bool = False) -> DataSource:
    """The counts of an AnnData file: ``X``, or the layer ``data_key`` names (e.g.
    ``"counts"``), read a batch of rows at a time (see the module doc); ``skip_bad`` drops
    rows holding a value that is not a count (how many: ``facts["skipped"]``)."""
    import h5py

    name = str(path)
    try:
        handle = h5py.File(path, "r")
    except OSError:
        raise DataError(f"h5ad: {name!r} is not an HDF5 file, so not an AnnData .h5ad") from None
    with handle:
        if _attr(handle, "encoding-type") != "anndata" and not {"obs", "var"} <= set(handle):
            raise DataError(f"h5ad: {name!r} is HDF5 but not AnnData (no obs and var)")
        node, key = _matrix(handle, data_key, name)
        rows, bad = _open_rows(node, key, name, every=skip_bad)
        var_hash = _var_names_sha256(handle)
    facts: dict[str, Any] = {
        "layer": key.removeprefix("layers/"),
        "n_vars": rows.item_shape[0],
        "sparse": not isinstance(rows, ArrayRows),
        "var_names_sha256": var_hash,
    }
    if skip_bad:
        facts["skipped"] = len(bad)
        if len(bad) == len(rows):
            raise DataError(f"h5ad: every row of {name!r} holds a value that is not a count")
        if len(bad):
            warn_data(f"{name}: skipped {len(bad)} rows holding values that are not counts")
            rows = rows.subset(np.setdiff1d(np.arange(len(rows)), bad))
    return DataSource(name, "h5ad", rows, values="counts", facts=facts)


def _matrix(handle: Any, data_key: str | None, name: str) -> tuple[Any, str]:
    """The count matrix (``X`` or a layer) and its path in the file."""
    layers = sorted(handle["layers"]) if "layers" in handle else []
    if data_key in (None, "X"):
        if "X" not in handle:
            raise DataError(
                f"h5ad: {name!r} has no X; name a layer with --data-key "
                f"(layers: {', '.join(layers) or 'none'})"
            )
        return handle["X"], "X"
    if data_key not in layers:
        raise DataError(
            f"h5ad: {name!r} has no layer {data_key!r}; its layers: "
            f"{', '.join(layers) or 'none'} (leave out --data-key to read X)"
        )
    return handle["layers"][data_key], f"layers/{data_key}"


def _describe(node: Any, key: str, name: str) -> tuple[str, tuple[int, ...], np.dtype]:
    """How the matrix at ``key`` is stored ("dense", "csr_matrix", "csc_matrix"), its shape
    and the type of its values."""
    import h5py

    if isinstance(node, h5py.Dataset):
        kind, shape, dtype = "dense", tuple(node.shape), node.dtype
    else:
        kind = _attr(node, "encoding-type") or _attr(node, "h5sparse_format") + "_matrix"
        parts = {"data", "indices", "indptr"} <= set(node)
        if kind not in ("csr_matrix", "csc_matrix") or not parts:
            raise DataError(f"h5ad: {name!r}: {key} is not a dense or CSR/CSC matrix ({kind})")
        shape = tuple(node.attrs.get("shape", node.attrs.get("h5sparse_shape", ())))
        dtype = node["data"].dtype
    shape = tuple(int(s) for s in shape)
    if dtype.kind not in "buif":
        raise DataError(f"h5ad: {name!r}: {key} holds {dtype} values, not counts")
    if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
        raise DataError(f"h5ad: {name!r}: {key} holds no rows of counts (shape {shape})")
    return kind, shape, np.dtype(dtype)


def _open_rows(node: Any, key: str, name: str, every: bool) -> tuple[Rows, np.ndarray]:
    """The rows of the matrix at ``key`` and the rows holding a value that is not a count
    (with ``every``; else the first such value is raised as a DataError)."""
    kind, shape, dtype = _describe(node, key, name)
    path = os.path.abspath(node.file.filename)  # workers may run elsewhere than "."
    if kind == "dense":
        rows = ArrayRows(H5Dense(path, key, shape, dtype), shape[1:], "flat")
        return rows, _check_dense(node, name, key, every)
    if kind == "csc_matrix":
        import scipy.sparse

        arrays = (node["data"][()], node["indices"][()], node["indptr"][()])
        matrix = scipy.sparse.csc_matrix(arrays, shape=shape).tocsr()  # once, in memory
        data, indices, indptr = matrix.data, matrix.indices, matrix.indptr.astype(np.int64)
        sparse: Rows = SparseRows(matrix)
    else:
        data, indices, indptr = node["data"], node["indices"], node["indptr"][()].astype(np.int64)
        if len(indptr) != shape[0] + 1 or indptr[-1] != len(data):
            raise DataError(f"h5ad: {name!r}: {key}/indptr does not match its shape and data")
        sparse = CsrRows(H5Node(path, key), indptr, shape[1], dtype)
    return sparse, _check_sparse(data, indices, indptr, f"{name!r}: {key}", every)


def _check_sparse(
    data: Any, indices: Any, indptr: np.ndarray, what: str, every: bool
) -> np.ndarray:
    """The rows of a CSR matrix holding a stored value that is not a count."""
    bad_rows = []
    for lo in range(0, len(data), CHECK_VALUES):
        values = np.asarray(data[lo : lo + CHECK_VALUES])
        at = lo + np.flatnonzero(_bad(values))
        if len(at) == 0:
            continue
        rows = np.searchsorted(indptr, at, side="right") - 1
        if not every:
            value, col = values[at[0] - lo], int(indices[int(at[0])])
            raise _not_count(what, int(rows[0]), col, value)
        bad_rows.append(rows)
    return np.unique(np.concatenate(bad_rows)) if bad_rows else np.zeros(0, np.int64)


def _check_dense(dataset: Any, name: str, key: str, every: bool) -> np.ndarray:
    """The rows of a dense matrix holding a value that is not a count."""
    n, d = dataset.shape
    step = max(1, CHECK_VALUES // d)
    bad_rows = []
    for lo in range(0, n, step):
        block = np.asarray(dataset[lo : lo + step])
        bad = _bad(block)
        if not bad.any():
            continue
        if not every:
            row, col = np.argwhere(bad)[0]
            raise _not_count(f"{name!r}: {key}", lo + int(row), int(col), block[row, col])
        bad_rows.append(lo + np.flatnonzero(bad.any(axis=1)))
    return np.concatenate(bad_rows) if bad_rows else np.zeros(0, np.int64)


def _not_count(what: str, row: int, col: int, value: Any) -> DataError:
    return DataError(
        f"h5ad: {what} row {row + 1}, column {col + 1} holds {value}: counts are non-negative "
        "whole numbers (--skip-bad drops such rows)"
    )


def _var_names_sha256(handle: Any) -> str | None:
    """The SHA-256 of the var names, one a line (None when the file keeps none)."""
    import h5py

    var = handle.get("var")
    names = None
    if isinstance(var, h5py.Group):
        key = _attr(var, "_index") or "_index"
        if isinstance(var.get(key), h5py.Dataset):
            names = _strings(var[key])
    elif isinstance(var, h5py.Dataset) and var.dtype.names and "index" in var.dtype.names:
        names = _strings(var.fields("index"))
    if names is None:
        return None
    return hashlib.sha256("\n".join(names).encode()).hexdigest()
