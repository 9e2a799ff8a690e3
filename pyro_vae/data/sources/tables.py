"""Count tables: CSV, TSV, whitespace-separated ``.txt`` (optionally gzipped) and Parquet.

One row per sample, one column of counts per feature. A header row (feature names) and a first
column of sample ids (cell barcodes) are told apart from counts by being words, not numbers,
and are kept out of the counts; ``data_key`` names a column of class labels.

Tables are read with pandas into memory, held compactly (the smallest unsigned integer type
that holds the largest count): large data wants ``.npy``, HDF5 or ``.h5ad``, which stream.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import DataError
from .rows import ArrayRows
from .source import DataSource, reader, suffix_in, warn_data

TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
PEEK_ROWS = 50  # rows read as text to find the header and the id column
CHUNK_CELLS = 1 << 22  # cells converted at a time
MAX_COUNT = 2**53  # the largest whole number a float64 holds exactly
SKIP_HINT = " (--skip-bad drops such rows)"


@dataclass
class Layout:
    """Which columns of a table are what."""

    names: list[str]  # every column's name ("" where the table has no header)
    header: bool
    first_row: int  # the row number, in the file, of the first row of counts
    id_pos: int | None  # the column of sample ids, if any
    label_pos: int | None  # the column of labels (``data_key``), if any
    features: list[int]  # the columns of counts

    def column(self, pos: int) -> str:
        """A column as messages name it: its number (from 1) and its name."""
        return f"column {pos + 1} ({self.names[pos]!r})" if self.header else f"column {pos + 1}"


@reader("table", suffix_in(*TEXT_SUFFIXES, *PARQUET_SUFFIXES))
def open_table(path: Path, *, data_key: str | None = None, skip_bad: bool = False) -> DataSource:
    """The counts of a table, one row per sample (see the module doc), held in memory.

    ``data_key`` names a label column: its distinct values, sorted (as numbers when they all
    are), become the integer labels 0, 1, ..., and ``facts["classes"]`` their names. A cell
    that is not a count (not a number, negative or not whole; integer-valued floats are
    counts) is one DataError naming its row (from 1, as in the file: a CSV's header is row 1,
    a Parquet file's first row is row 1) and column; ``skip_bad`` drops such rows instead,
    with one warning, and counts them in ``facts["skipped"]``."""
    name = str(path)
    parquet = path.name.lower().endswith(PARQUET_SUFFIXES)
    with _reading(name):
        layout, chunks = _parquet(path, data_key) if parquet else _text(path, data_key)
    try:
        counts, labels, skipped, first = _read(_frames(chunks, name), layout, name, skip_bad)
    finally:
        chunks.close()  # the file, also when a bad cell stopped the reading
    if skipped:
        warn_data(f"{name}: skipped {skipped} rows that are not counts ({first})")
    facts: dict[str, Any] = {
        "header": layout.header,
        "columns": [layout.names[p] if layout.header else p + 1 for p in layout.features],
        "id_column": None if layout.id_pos is None else layout.names[layout.id_pos] or "column 1",
    }
    y = None
    if layout.label_pos is not None:
        y, classes = _classes(labels)
        facts.update(label_column=data_key, classes=classes)
    if skip_bad:
        facts["skipped"] = skipped
    rows = ArrayRows(counts, (counts.shape[1],), layout="flat")
    return DataSource(name, "table", rows, train_labels=y, values="counts", facts=facts)


def _read(
    frames: Iterable[Any], layout: Layout, name: str, skip_bad: bool
) -> tuple[np.ndarray, np.ndarray, int, str | None]:
    """The counts of every good row, their labels, how many rows were bad and what was wrong
    with the first (a DataError unless ``skip_bad``)."""
    parts, labels, skipped, start, first = [], [], 0, 0, None
    for frame in frames:
        values, bad, problem, hint = _check(frame, layout, start)
        if problem is not None and not skip_bad:
            raise DataError(f"table: {name!r} {problem}{hint}")
        first = first or problem
        skipped, start = skipped + int(bad.sum()), start + len(frame)
        parts.append(_compact(values[~bad]))
        if layout.label_pos is not None:
            labels.append(frame[layout.label_pos].to_numpy()[~bad])
    counts = np.concatenate(parts) if parts else np.zeros((0, len(layout.features)), np.uint8)
    if len(counts) == 0:
        raise DataError(f"table: {name!r} has no rows of counts" + (f" ({first})" if first else ""))
    return counts, np.concatenate(labels) if labels else np.zeros(0), skipped, first


@contextmanager
def _reading(name: str) -> Iterator[None]:
    """Errors of the parsers (a ragged row, a damaged file) as one DataError line."""
    try:
        yield
    except (DataError, ModuleNotFoundError):
        raise
    except Exception as err:  # pandas and pyarrow fail in many ways on a damaged file
        raise DataError(f"table: cannot read {name!r} ({type(err).__name__}: {err})") from None


def _frames(chunks: Iterable[Any], name: str) -> Iterator[Any]:
    """The chunks of a table, with the parser's errors as DataErrors."""
    with _reading(name):
        it = iter(chunks)
    while True:
        with _reading(name):
            frame = next(it, None)
        if frame is None:
            return
        yield frame


# --- which columns are what ------------------------------------------------------------------


def _text(path: Path, data_key: str | None) -> tuple[Layout, Any]:
    """The layout of a text table and its chunks (columns numbered from 0)."""
    import pandas as pd

    sep = _separator(path)
    peek = pd.read_csv(path, sep=sep, header=None, nrows=PEEK_ROWS, dtype=str, na_filter=False)
    if peek.empty:
        raise DataError(f"table: {str(path)!r} is empty")
    cells = peek.to_numpy(dtype=str)
    header = _is_header(list(cells[0]))
    names = [c.strip() for c in cells[0]] if header else [""] * cells.shape[1]
    body = cells[1:] if header else cells
    label_pos = _label_pos(names, header, data_key, str(path))
    first_words = any(not _is_number(c) for c in body[:, 0])
    has_id = cells.shape[1] > 1 and label_pos != 0 and (first_words or (header and not names[0]))
    layout = _layout(names, header, 1 + header, 0 if has_id else None, label_pos, str(path))
    text = {p: str for p in (layout.id_pos, label_pos) if p is not None}
    chunks = pd.read_csv(
        path, sep=sep, header=None, skiprows=int(header), dtype=text,
        chunksize=max(1, CHUNK_CELLS // len(names)),
    )  # fmt: skip
    return layout, chunks


def _parquet(path: Path, data_key: str | None) -> tuple[Layout, Any]:
    """The layout of a Parquet table and its chunks (columns numbered from 0): a stored pandas
    index, or else a first column of strings, is the id column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    schema = table.schema_arrow
    meta = json.loads((schema.metadata or {}).get(b"pandas", b"{}"))
    index = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    names = list(schema.names)
    label_pos = _label_pos(names, True, data_key, str(path))
    id_pos = names.index(index[0]) if index else None
    first = schema.types[0] if names else None
    if id_pos is None and first is not None and label_pos != 0 and len(names) > 1:
        words = pa.types.is_string(first) or pa.types.is_large_string(first)
        id_pos = 0 if words or pa.types.is_dictionary(first) else None
    shown = ["index" if n.startswith("__index_level_") else n for n in names]
    skip = {names.index(c) for c in index}
    layout = _layout(shown, True, 1, id_pos, label_pos, str(path), skip)

    def chunks() -> Iterator[Any]:
        try:
            for batch in table.iter_batches(batch_size=max(1, CHUNK_CELLS // len(names))):
                frame = batch.to_pandas(ignore_metadata=True)
                frame.columns = range(frame.shape[1])
                yield frame
        finally:
            table.close()

    return layout, chunks()


def _layout(
    names: list[str],
    header: bool,
    first_row: int,
    id_pos: int | None,
    label_pos: int | None,
    name: str,
    skip: Iterable[int] = (),
) -> Layout:
    not_counts = {id_pos, label_pos, *skip}
    features = [p for p in range(len(names)) if p not in not_counts]
    if not features:
        raise DataError(f"table: {name!r} has no columns of counts")
    return Layout(names, header, first_row, id_pos, label_pos, features)


def _label_pos(names: list[str], header: bool, data_key: str | None, name: str) -> int | None:
    if data_key is None:
        return None
    if not header:
        raise DataError(f"table: {name!r} has no header row, so no label column {data_key!r}")
    if data_key not in names:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise DataError(f"table: {name!r} has no column {data_key!r}; its columns: {shown}")
    return names.index(data_key)


def _separator(path: Path) -> str:
    """The separator a suffix calls for; a ``.txt`` file's is found in its first line."""
    lower = path.name.lower()
    if lower.endswith((".tsv", ".tsv.gz")):
        return "\t"
    if lower.endswith((".csv", ".csv.gz")):
        return ","
    with open(path, errors="replace") as f:
        line = f.readline()
    return "\t" if "\t" in line else "," if "," in line else r"\s+"


def _is_number(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def _is_header(row: list[str]) -> bool:
    """Whether a table's first row names its columns: most of its cells past the first are
    words, its first cell is empty (pandas' unnamed index), or its numbers count 0, 1, 2, ...
    (pandas' numbered columns; a row of counts hardly ever is)."""
    rest = row[1:] if len(row) > 1 else row
    words = sum(not _is_number(c) for c in rest)
    if 2 * words > len(rest) or (len(row) > 1 and not row[0].strip()):
        return True
    numbers = [float(c) for c in (row if _is_number(row[0]) else row[1:]) if _is_number(c)]
    return len(numbers) >= 3 and numbers == [float(k) for k in range(len(numbers))]


# --- counts, labels --------------------------------------------------------------------------


def _check(
    frame: Any, layout: Layout, start: int
) -> tuple[np.ndarray, np.ndarray, str | None, str]:
    """A chunk's counts as float64, which of its rows are bad (a cell that is not a count, a
    missing label), what is wrong with the first of them and what to do about it."""
    import pandas as pd

    block = frame[layout.features]
    if all(pd.api.types.is_numeric_dtype(t) for t in block.dtypes):
        values = block.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = np.empty(block.shape, dtype=np.float64)
        for k, pos in enumerate(layout.features):
            values[:, k] = pd.to_numeric(frame[pos], errors="coerce")
    bad_cells = ~np.isfinite(values) | (values < 0) | (values != np.floor(values))
    bad_cells |= values > MAX_COUNT
    bad = bad_cells.any(axis=1)
    if layout.label_pos is not None:
        bad |= frame[layout.label_pos].isna().to_numpy()
    if not bad.any():
        return values, bad, None, ""
    i = int(np.flatnonzero(bad)[0])
    row = layout.first_row + start + i
    if not bad_cells[i].any():
        missing = f"row {row} has no label in {layout.column(layout.label_pos)}"
        return values, bad, missing, SKIP_HINT
    k = int(np.flatnonzero(bad_cells[i])[0])
    pos = layout.features[k]
    cell = frame.iat[i, pos]
    if pd.isna(cell):
        what = "is empty"
    else:
        what = f"holds {cell!r}" if isinstance(cell, str) else f"holds {cell}"
    problem = f"row {row}, {layout.column(pos)} {what}: counts are whole numbers from 0 to 2**53"
    if np.isnan(values[:, k]).all() and frame[pos].notna().all():  # text in every row
        return values, bad, problem, _text_column_hint(layout, pos)
    return values, bad, problem, SKIP_HINT


def _text_column_hint(layout: Layout, pos: int) -> str:
    """What to do about a column of text among the counts: it is most likely labels."""
    name = layout.names[pos] if layout.header else ""
    if name and not name.startswith("Unnamed"):
        return f" (a column of text: if it holds labels, pass --data-key {name})"
    return (" (a column of text: if it holds labels, give it a name in the header row and pass "
            "that name as --data-key)")  # fmt: skip


def _compact(values: np.ndarray) -> np.ndarray:
    """Whole numbers as the smallest unsigned integer type that holds the largest."""
    top = int(values.max()) if values.size else 0
    return values.astype(np.min_scalar_type(top))


def _classes(raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Labels as integers (the rank of each distinct value, sorted as numbers when they all
    are, else as text) and the class names in that order."""
    text = np.asarray([str(v) for v in raw])
    names, inverse = np.unique(text, return_inverse=True)
    if all(_is_number(n) for n in names):
        order = np.argsort([float(n) for n in names], kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        names, inverse = names[order], rank[inverse]
    return inverse.reshape(-1).astype(np.int64), [str(n) for n in names]
