"""Where the loop's batches come from: the device-resident tensors (a gather per batch), or a
stream of batches read from disk by ``DataLoader`` workers.

Both cut one seeded permutation per epoch into global batches, and each process takes its
contiguous slice of a global batch (:meth:`Cluster.shard`): the streamed path reads only that
slice, so processes under ``torchrun`` read disjoint rows. The objective's scale is the same
on both (nats per image); the resident path is today's, bit for bit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data import Binarizer, DataError
from ..data.binarize import _check_probabilities
from ..data.sources import LazyRows, batch_loader
from ..data.sources.source import to_float
from ..data.sources.stream import EpochBatches, read_ahead, start_loader
from .distributed import Cluster
from .run_data import RunData

CHECK_BYTES = 1 << 26  # streamed rows are checked against the likelihood's support 64 MiB
# (as float32) at a time


class ResidentFeed:
    """Batches gathered from the epoch's tensor on the device (the fast path)."""

    streamed = False

    def __init__(self, binarizer: Binarizer, cluster: Cluster) -> None:
        self.binarizer, self.cluster = binarizer, cluster
        self.wait_seconds = self.total_wait = 0.0

    def epoch_rows(self, epoch: int) -> torch.Tensor:
        """The training rows as this epoch sees them (a fresh draw under ``dynamic``)."""
        return self.binarizer.train_x()

    def batches(
        self, x_epoch: torch.Tensor, perm: torch.Tensor, start: int, steps: int, size: int,
        epoch: int,
    ) -> Iterator[torch.Tensor]:  # fmt: skip
        for b in range(start, steps):
            # index_select, not x[rows]: the same rows, a third of the time on the CPU (38 us
            # against 10 for 128 rows of 784)
            yield self.cluster.shard(x_epoch.index_select(0, perm[b * size : (b + 1) * size]))


class StreamFeed:
    """Batches read from disk by ``workers`` processes (0: a thread of this one), binarized
    where they are read and made float on arrival.

    A streamed ``dynamic`` binarization draws batch b of epoch e from a generator seeded by
    (seed, e, b, rank): the same draw on resume, whatever worker read the rows."""

    streamed = True

    def __init__(
        self, run_data: RunData, binarize: str, seed: int, workers: int, cluster: Cluster,
        device: torch.device,
    ) -> None:  # fmt: skip
        assert run_data.source is not None
        self.rows, self.scale = run_data.source.train, run_data.scale
        self.binarize, self.seed, self.workers = binarize, seed, workers
        self.cluster, self.device = cluster, device
        self.watch = FileWatch(run_data.record.get("path"), run_data.source.name)
        self.wait_seconds = 0.0  # time the loop spent waiting for a batch, this epoch
        self.total_wait = 0.0  # and over every epoch of this session
        self._batches = EpochBatches()  # what the one loader reads next
        self._loader: DataLoader | None = None
        self._epoch = 0

    def epoch_rows(self, epoch: int | None = None) -> LazyRows:
        """The training rows as a measure of epoch ``epoch`` (default: the current) reads
        them (its own fixed draw)."""
        self._epoch = self._epoch if epoch is None else epoch
        fixed = None if self.binarize == "none" else self._seed(self._epoch, -1)
        return LazyRows(self.rows, self.scale, self.device, fixed_seed=fixed)

    def _seed(self, epoch: int, batch: int) -> int:
        return hash((self.seed, epoch, batch, self.cluster.rank)) & (2**62 - 1)

    def _draw_seed(self, epoch: int, batch: int) -> int | None:
        """The seed of batch ``batch``'s binarization draw (None: not binarized)."""
        if self.binarize == "dynamic":
            return self._seed(epoch, batch)
        if self.binarize == "static":
            return self._seed(-1, batch)
        return None

    def batches(
        self, x_epoch: LazyRows, perm: torch.Tensor, start: int, steps: int, size: int,
        epoch: int,
    ) -> Iterator[torch.Tensor]:  # fmt: skip
        order = perm.cpu().numpy()
        world, rank = self.cluster.world_size, self.cluster.rank
        self._batches.batches = [
            (
                self._draw_seed(epoch, b),
                np.array_split(order[b * size : (b + 1) * size], world)[rank],
            )
            for b in range(start, steps)
        ]
        if self._loader is None:
            cuda = self.device.type == "cuda"
            self._loader = batch_loader(self.rows, self.scale, self._batches, self.workers, cuda)
        self.wait_seconds = 0.0
        batches = start_loader(self._loader)
        if self.workers == 0:
            batches = read_ahead(batches)
        for _ in range(start, steps):
            t0 = time.perf_counter()
            compact = next(batches).to(self.device, non_blocking=True)
            if self.binarize == "none":
                x = to_float(compact, self.scale)
            else:  # drawn as 0/1 bytes where the rows were read
                x = compact.reshape(compact.shape[0], -1).to(torch.float32)
            waited = time.perf_counter() - t0
            self.wait_seconds += waited
            self.total_wait += waited
            yield x
        self.watch.check()  # before the epoch is measured and saved


class DataChanged(DataError):
    """The streamed data changed under a run: what it read no longer holds together."""


class FileWatch:
    """The size and modification time of a streamed file (or a folder's own), taken when the
    run opened it: a file replaced or rewritten while the run reads it is seen at the next
    epoch's end, before that epoch is measured or saved, so the last checkpoint stays whole
    and consistent."""

    def __init__(self, path: str | None, name: str) -> None:
        self.path, self.name = path, name
        self.stamp = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            stat = os.stat(self.path)
        except OSError:
            return (-1, -1)
        return (stat.st_size, stat.st_mtime_ns)

    def check(self) -> None:
        if self.stamp is not None and self._stamp() != self.stamp:
            raise DataChanged(
                f"{self.name!r} changed while this run read it: the run stopped before "
                "measuring this epoch; its last checkpoint is whole (resume once the data are "
                "the run's again, or train a new run)"
            )


def check_streamed(run_data: RunData, likelihood, binarize: str) -> None:
    """Every streamed row lies in the likelihood's support (or, when binarized, in [0, 1]):
    one line before the first step, read a chunk at a time."""
    data = run_data.data
    for name, rows in (("training", data.train_x), ("test", data.test_x)):
        plain = LazyRows(rows.rows, rows.scale, rows.device)
        chunk = max(1, CHECK_BYTES // (4 * rows.rows.width))
        for start in range(0, len(plain), chunk):
            x = plain[start : start + chunk]
            if not torch.isfinite(x).all():
                raise DataError(f"{run_data.data.name}: the {name} rows contain NaN or inf")
            if binarize != "none":
                _check_probabilities(binarize, _Split(x))
            elif hasattr(likelihood, "check_data"):
                likelihood.check_data(x)


class _Split:
    """The two splits of :func:`_check_probabilities`, both one chunk of rows."""

    def __init__(self, x: torch.Tensor) -> None:
        self.train_x = self.test_x = x


class StreamBinarizer:
    """What the loop and the checks ask of a :class:`~pyro_vae.data.Binarizer`, for streamed
    rows: the test rows (a fixed draw when binarized, made per block as they are read) and the
    rows of the current epoch. The per-batch draws need no state of their own."""

    def __init__(self, mode: str, run_data: RunData, feed: StreamFeed) -> None:
        if mode == "static":
            raise DataError(
                "--binarize static draws every training image once and keeps the draw, which a "
                "stream does not hold: use --binarize dynamic, or --stream never"
            )
        self.mode, self.feed = mode, feed
        self.test_x = run_data.data.test_x

    def train_x(self) -> LazyRows:
        return self.feed.epoch_rows()

    def restart(self) -> None:
        """(Nothing to rewind: each batch's draw is seeded by its place.)"""

    def state(self) -> torch.Tensor:
        return torch.zeros(1, dtype=torch.uint8)

    def set_state(self, state: torch.Tensor) -> None:
        """(See :meth:`restart`.)"""
