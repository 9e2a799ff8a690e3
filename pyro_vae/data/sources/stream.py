"""Streaming rows that do not fit in memory: batches read from disk by ``DataLoader`` workers,
kept compact (uint8 images, integer counts) until the batch reaches the device.

- :class:`BatchReader` is the ``Dataset`` the workers run: given a batch's row indices it
  returns those rows, compact, in that order (one read per batch: a memory map or HDF5 reads a
  sorted block far faster than row by row); given a seed too, their binarization draw, as
  0/1 bytes (the draw is made where the rows are read, beside the training step, not in it).
- :func:`batch_loader` is the ``DataLoader`` over a list of index batches (the epoch's
  permutation, cut into this process's shards), with workers and pinned memory.
- :func:`read_ahead` reads batches in a thread of the training process (no worker processes,
  no second copy of the imports): the read and the draw overlap the step.
- :class:`LazyRows` stands where a tensor of every row would: ``rows[a:b]`` and
  ``rows[index]`` read and convert just those rows, so measuring the bound over a test split
  of any size holds one batch at a time.

Binarizing streamed rows draws per batch from generators seeded by the batch's place, so a
batch is the same draw however the rows are read, by any worker, on resume.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .rows import Rows
from .source import to_float

BLOCK_ROWS = 4096  # a fixed binarization of streamed test rows is drawn per block of this many


class BatchReader(Dataset):
    """A ``Dataset`` indexed by whole batches: ``reader[(seed, index)]`` is the rows
    ``index``, compact; with a seed (not None), their Bernoulli draw as 0/1 bytes."""

    def __init__(self, rows: Rows, scale: float | None) -> None:
        self.rows, self.scale = rows, scale

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: tuple[int | None, np.ndarray]) -> torch.Tensor:
        seed, index = item
        batch = self.rows.read(np.asarray(index, dtype=np.int64))
        if seed is None:
            return torch.from_numpy(batch)
        # in NumPy: a torch op here would start a second team of intra-op threads
        x = batch.reshape(len(batch), -1).astype(np.float32)
        if self.scale is not None:
            x *= np.float32(self.scale)
        return torch.from_numpy((uniform_draw(x.shape, seed) < x).view(np.uint8))


class EpochBatches(Sampler):
    """The batches of the pass about to start, (draw seed or None, row indices), set before
    each: one loader and its workers serve every epoch."""

    def __init__(self) -> None:
        self.batches: list[tuple[int | None, np.ndarray]] = []

    def __iter__(self) -> Iterator[tuple[int | None, np.ndarray]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def batch_loader(
    rows: Rows, scale: float | None, batches: EpochBatches, workers: int, pin_memory: bool
) -> DataLoader:
    """The compact batches ``batches`` of ``rows`` (see :class:`BatchReader`), in that order,
    read ahead by ``workers`` processes (0: in this one; see :func:`read_ahead`).

    The workers are started once and kept for the whole run, by ``rows.start_method``:
    ``spawn`` for rows read from disk (a forked worker carries the trainer's whole memory in
    its page tables, ~0.5 GB each as ``RssAnon`` counts it, measured; a spawned one holds only
    its imports, and a memory map travels as its file), ``fork`` for rows held in memory or a
    user's ``Dataset``, which need not pickle (shared with the workers, not copied)."""
    return DataLoader(
        BatchReader(rows, scale),
        batch_size=None,  # the sampler yields whole batches of indices
        sampler=batches,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=workers > 0,
        multiprocessing_context=rows.start_method if workers else None,
        # its own generator: a loader draws its workers' base seed when it starts, which from
        # the global generator would shift the noise every step after it draws
        generator=torch.Generator().manual_seed(0),
    )


def start_loader(loader: DataLoader) -> Iterator[torch.Tensor]:
    """An iterator over ``loader``; spawned workers start without running the user's script.

    A spawned process imports the parent's ``__main__`` by its file, which re-runs a script
    written without ``if __name__ == "__main__":`` (its training again, in every worker).
    The workers only need this package, so the script's file is hidden while they start."""
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    hide = script is not None and getattr(main, "__spec__", None) is None
    if hide:
        del main.__file__  # type: ignore[union-attr]
    try:
        return iter(loader)
    finally:
        if hide:
            main.__file__ = script  # type: ignore[union-attr]


def read_ahead(batches: Iterable[torch.Tensor], depth: int = 4) -> Iterator[torch.Tensor]:
    """``batches``, read up to ``depth`` ahead by a thread of this process.

    The read (NumPy's gather from a memory map) and the draw release the GIL, so they run
    beside the training step, on the core its Python work leaves idle, at no cost in memory.
    Written here because ``DataLoader`` reads ahead only in worker processes. An error in the
    thread is raised here, in order; closing the iterator stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, object]) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not put(("batch", batch)):
                    return
            put(("end", None))
        except BaseException as error:  # raised again in the consumer
            put(("error", error))

    threading.Thread(target=read, name="pyro-vae-read-ahead", daemon=True).start()
    try:
        while True:
            kind, item = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise item  # type: ignore[misc]
            yield item  # type: ignore[misc]
    finally:
        stop.set()


def uniform_draw(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """float32 uniforms on [0, 1) from a PCG64 generator seeded with ``seed``."""
    return np.random.Generator(np.random.PCG64(seed % 2**63)).random(shape, dtype=np.float32)


def bernoulli_draw(x: torch.Tensor, seed: int) -> torch.Tensor:
    """x_bin ~ Bernoulli(x), drawn as 1[u < x] with u from :func:`uniform_draw` (the draw
    :class:`BatchReader` makes, on the CPU whatever the device)."""
    u = torch.from_numpy(uniform_draw(tuple(x.shape), seed)).to(x.device)
    return u.lt_(x).to(x.dtype)


class LazyRows:
    """Rows of a split as float32 on ``device``, read when indexed (see the module doc).

    ``fixed_seed``: binarize with a fixed draw (for slices, per block of :data:`BLOCK_ROWS`
    rows, so a row's draw does not depend on where a slice starts; for an index, one draw of
    the rows gathered); None: the values as they are."""

    def __init__(
        self,
        rows: Rows,
        scale: float | None,
        device: torch.device | str = "cpu",
        fixed_seed: int | None = None,
    ) -> None:
        self.rows, self.scale, self.fixed_seed = rows, scale, fixed_seed
        self.device = torch.device(device)
        self.dtype = torch.float32
        self.ndim = 2

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), self.rows.width))

    def __len__(self) -> int:
        return len(self.rows)

    # the few tensor methods the measures call on the data they are given
    def element_size(self) -> int:
        return 4

    def new_empty(self, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype or self.dtype, device=self.device)

    def new_zeros(self, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.zeros(shape, dtype=dtype or self.dtype, device=self.device)

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> LazyRows:
        return LazyRows(self.rows, self.scale, device, self.fixed_seed)

    def read(self, index: np.ndarray) -> torch.Tensor:
        """Rows ``index`` (no fixed binarization: see :meth:`__getitem__`)."""
        return to_float(self.rows.read(index), self.scale).to(self.device)

    def __getitem__(self, key: slice | torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self[np.arange(start, stop, step)]
            if self.fixed_seed is None:
                return self.read(np.arange(start, stop, dtype=np.int64))
            return self._fixed_blocks(start, stop)
        index = torch.as_tensor(key).cpu().numpy().astype(np.int64)
        if self.fixed_seed is None:
            return self.read(index)
        # rows picked by index (a fixed subset, as the per-epoch measure takes): one draw for
        # the gathered rows, the same for the same index
        return bernoulli_draw(self.read(index), self.fixed_seed)

    def _fixed_blocks(self, start: int, stop: int) -> torch.Tensor:
        parts = []
        last = (stop - 1) // BLOCK_ROWS + 1 if stop > start else 0
        for block in range(start // BLOCK_ROWS, last):
            lo = block * BLOCK_ROWS
            hi = min(lo + BLOCK_ROWS, len(self))
            rows = self.read(np.arange(lo, hi, dtype=np.int64))
            x = bernoulli_draw(rows, self.fixed_seed + block)
            parts.append(x[max(start - lo, 0) : min(stop, hi) - lo].clone())  # (not the block)
        if not parts:
            return torch.empty(0, self.rows.width, device=self.device)
        return torch.cat(parts)
