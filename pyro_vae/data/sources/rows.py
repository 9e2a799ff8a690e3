"""Rows read by index, kept compact (uint8 images, integer counts) until a batch asks for them.

Every reader of the user's files gives its rows as a :class:`Rows`: an ``.npy`` memory map, an
HDF5 dataset, a folder of image files or a sparse count matrix all answer
``rows.read(index)`` with a dense NumPy batch in the order asked, and nothing else of the
source is held in memory. Training either gathers every row once onto the device (when the
data fit) or streams batches through a ``DataLoader`` (:mod:`pyro_vae.data.sources.stream`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..datasets import DataError

LAYOUTS = ("auto", "nchw", "nhwc")


class Rows:
    """Compact rows of one shape, read by index (a base class: readers define :meth:`read`).

    ``item_shape`` is the shape of one row as the model sees it: (C, H, W) for images, (D,)
    for vectors; ``dtype`` the NumPy type rows are stored in."""

    item_shape: tuple[int, ...]
    dtype: np.dtype
    # how DataLoader workers start: "spawn" for rows read from disk (a worker holds only its
    # imports), "fork" for rows held in memory (shared with the workers, not copied to each)
    start_method = "spawn"
    # whether reading a batch costs more than copying it (decoding files, decompressing):
    # worker processes then pay; for a memory map they cost more than they save (measured)
    decodes = True

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (int64, any order, repeats allowed), shaped (len(index),
        *item_shape), in the order asked."""
        raise NotImplementedError

    @property
    def width(self) -> int:
        """Values per row."""
        return int(np.prod(self.item_shape))

    def subset(self, index: Sequence[int] | np.ndarray) -> Rows:
        return SubsetRows(self, np.asarray(index, dtype=np.int64))

    def all_rows(self) -> np.ndarray:
        return self.read(np.arange(len(self), dtype=np.int64))


class ArrayRows(Rows):
    """Rows of an array-like that slices along its first axis: a NumPy array, a memory-mapped
    ``.npy`` or an ``h5py.Dataset``. ``layout="nhwc"`` stores images channels-last (what PIL and
    NumPy give); rows come back channels-first, one batch at a time."""

    def __init__(self, array, item_shape: tuple[int, ...], layout: str = "nchw") -> None:
        self.array, self.item_shape, self.layout = array, tuple(item_shape), layout
        self.dtype = np.dtype(array.dtype)

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def start_method(self) -> str:  # type: ignore[override]
        in_memory = isinstance(self.array, np.ndarray) and not isinstance(self.array, np.memmap)
        return "fork" if in_memory else "spawn"

    @property
    def decodes(self) -> bool:  # type: ignore[override]
        return not isinstance(self.array, np.ndarray)  # (an HDF5 dataset: read and decoded)

    def __getstate__(self) -> dict:
        """A memory map travels to a worker process as its file, not as its contents (NumPy
        pickles a memmap's every byte)."""
        state = dict(self.__dict__)
        a = self.array
        if isinstance(a, np.memmap) and a.filename is not None and a.base is not None:
            order = "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"
            state["array"] = ("memmap", a.filename, a.dtype.str, a.shape, a.offset, order)
        return state

    def __setstate__(self, state: dict) -> None:
        a = state["array"]
        if isinstance(a, tuple) and a and a[0] == "memmap":
            _, filename, dtype, shape, offset, order = a
            state["array"] = np.memmap(filename, dtype, "r", offset, shape, order)
        self.__dict__.update(state)

    def read(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        # sorted, unique reads: what h5py requires, and what a memory map reads fastest
        unique, back = np.unique(index, return_inverse=True)
        if len(unique) and (unique[0] < 0 or unique[-1] >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        if len(unique) and unique[-1] - unique[0] + 1 == len(unique):  # one run: a slice
            block = np.asarray(self.array[int(unique[0]) : int(unique[-1]) + 1])
        else:
            block = np.asarray(self.array[unique])
        block = block[back.reshape(-1)]
        if self.layout == "nhwc":
            block = block.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(block).reshape(len(index), *self.item_shape)


class SubsetRows(Rows):
    """The rows ``index`` of ``base`` (a split of a source that has none of its own)."""

    def __init__(self, base: Rows, index: np.ndarray) -> None:
        self.base, self.index = base, index
        self.item_shape, self.dtype = base.item_shape, base.dtype

    @property
    def start_method(self) -> str:  # type: ignore[override]
        return self.base.start_method

    @property
    def decodes(self) -> bool:  # type: ignore[override]
        return self.base.decodes

    def __len__(self) -> int:
        return len(self.index)

    def read(self, index: np.ndarray) -> np.ndarray:
        return self.base.read(self.index[np.asarray(index, dtype=np.int64)])


class ConcatRows(Rows):
    """Several sources of rows of one shape, one after another."""

    def __init__(self, parts: Sequence[Rows]) -> None:
        self.parts = list(parts)
        self.item_shape, self.dtype = parts[0].item_shape, parts[0].dtype
        self.starts = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), *self.item_shape), dtype=self.dtype)
        which = np.searchsorted(self.starts, index, side="right") - 1
        for k, part in enumerate(self.parts):
            mine = which == k
            if mine.any():
                out[mine] = part.read(index[mine] - self.starts[k])
        return out


def image_layout(shape: tuple[int, ...], layout: str, name: str) -> tuple[tuple[int, ...], str]:
    """The (C, H, W) of stored images of per-row ``shape`` and how they are stored.

    (H, W) is one grey channel; (D,) stays a vector. A 3-axis row is channels-first
    (``nchw``) or channels-last (``nhwc``): told apart when only one axis can hold channels
    (1, 3 or 4 values, at most a quarter of the others), else asked for with ``--layout``;
    never guessed silently."""
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    if len(shape) == 1:
        return tuple(shape), "flat"
    if len(shape) == 2:
        if layout != "auto":
            raise DataError(f"{name}: rows of shape {shape} are grey images; drop --layout")
        return (1, *shape), "nchw"
    if len(shape) != 3:
        raise DataError(f"{name}: rows of shape {shape}: give images (H, W), (C, H, W) or "
                        "(H, W, C), or vectors (D,)")  # fmt: skip
    if layout == "auto":
        first = shape[0] in (1, 3, 4) and shape[0] * 4 <= min(shape[1:])
        last = shape[2] in (1, 3, 4) and shape[2] * 4 <= min(shape[:2])
        if first == last:
            raise DataError(
                f"{name}: rows of shape {shape} could be channels-first or channels-last: "
                "say which with --layout nchw or --layout nhwc"
            )
        layout = "nchw" if first else "nhwc"
    c, h, w = shape if layout == "nchw" else (shape[2], shape[0], shape[1])
    return (c, h, w), layout
