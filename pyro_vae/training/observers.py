"""Observers of the training loop: what is recorded or shown as it runs.

The loop calls each observer (on rank 0 of a multi-process run) at fixed points: when it
starts, after each step (keep that cheap: it runs inside the timed loop), after each epoch with
that epoch's metrics row, when it closes (always, finished or stopped) and when it has
finished, with the summary. Recording the metrics and showing progress live here; TensorBoard
is :class:`pyro_vae.training.tensorboard.TensorBoardLog`; drawing figures is
:class:`pyro_vae.report.FiguresAtEnd`. A new logger is one more observer.
"""

from __future__ import annotations

from typing import Any, TextIO

import torch

from ..progress import Progress as ProgressOf
from .banner import banner
from .metrics import metric_fields
from .run_dir import MetricsLog, RunDirectory

# Each method receives the pyro_vae.training.loop.Trainer that calls it (its config, position,
# metrics, model and parts); observers do not import the loop that drives them.
CallingTrainer = Any


class Observer:
    """Does nothing at every point; subclasses override the points they need."""

    def on_start(self, trainer: CallingTrainer) -> None:
        """Before the first step of this process's run (resumed runs included)."""

    def on_step_end(self, trainer: CallingTrainer, epoch_loss: torch.Tensor) -> None:
        """After each step; ``epoch_loss`` is the loss summed over this epoch's steps so far
        (a tensor: reading it is a host synchronisation on a GPU, so read it rarely)."""

    def on_epoch_end(self, trainer: CallingTrainer, row: dict[str, float]) -> None:
        """After an epoch was trained and measured; ``row`` is its line of metrics.csv. To end
        the run after this epoch, set ``trainer.stop_request`` to the exception to raise once
        the epoch's checkpoint is saved (a run of one process)."""

    def on_close(self, trainer: CallingTrainer) -> None:
        """When the loop ends, finished or not."""

    def on_end(self, trainer: CallingTrainer, summary: dict[str, Any]) -> None:
        """After the last epoch, with the run's summary (not called for a stopped run)."""


class MetricsCSV(Observer):
    """Appends each epoch's row to RUN_DIR/metrics.csv, flushed, so a killed run keeps it."""

    def __init__(self, run_dir: RunDirectory) -> None:
        self.run_dir = run_dir
        self._log: MetricsLog | None = None

    def on_start(self, trainer: CallingTrainer) -> None:
        self._log = self.run_dir.metrics_log(metric_fields(trainer.vae))

    def on_epoch_end(self, trainer: CallingTrainer, row: dict[str, float]) -> None:
        self._log.append(row)

    def on_close(self, trainer: CallingTrainer) -> None:
        if self._log is not None:
            self._log.close()


class Progress(Observer):
    """Where a run is, as it runs: the banner (:func:`pyro_vae.training.banner.banner`) and the
    reference check's line before the first step, then progress over the run's steps with the
    running loss and images per second: a bar on a terminal, a plain line every ``every``
    seconds and one per epoch elsewhere (:class:`pyro_vae.progress.Progress`). The loss is read
    from its tensor only when the bar is redrawn."""

    def __init__(
        self, stream: TextIO | None = None, every: float = 10.0, interval: float = 0.1
    ) -> None:
        self.stream, self.every, self.interval = stream, every, interval
        self._progress: ProgressOf | None = None
        self._epoch_start = (0.0, 0)
        self._tested = ""  # the last epoch's test -ELBO, shown beside the bar

    def on_start(self, trainer: CallingTrainer) -> None:
        steps, pos = trainer.parts.steps_per_epoch, trainer.pos
        self._progress = ProgressOf(
            trainer.config.epochs * steps,
            "train",
            "step",
            initial=pos.epoch * steps + pos.batch,
            stream=self.stream,
            every=self.every,
            interval=self.interval,
        )
        for line in banner(trainer):
            self._progress.write(line)
        self._epoch_start = (self._progress.elapsed, pos.batch)

    def on_step_end(self, trainer: CallingTrainer, epoch_loss: torch.Tensor) -> None:
        self._progress.advance(1, lambda: self._fields(trainer, epoch_loss))

    def _fields(self, trainer: CallingTrainer, epoch_loss: torch.Tensor) -> str:
        pos, batch = trainer.pos, trainer.parts.global_batch
        seconds, first = self._epoch_start
        images = (pos.batch - first) * batch
        speed = images / max(self._progress.elapsed - seconds, 1e-9)
        done = min(pos.batch * batch, trainer.images_per_epoch)
        loss = epoch_loss.item() / max(done, 1)  # per image, over this epoch so far
        feed = trainer.parts.feed
        waited = ""
        if feed.streamed:  # the share of this epoch's time the steps waited for a batch
            share = feed.wait_seconds / max(self._progress.elapsed - seconds, 1e-9)
            waited = f", data wait {min(share, 1.0):.0%}"
        return (
            f"epoch {pos.epoch + 1}/{trainer.config.epochs}, loss {loss:.2f}, "
            f"{speed:,.0f} images/s{waited}{self._tested}"
        )

    def on_epoch_end(self, trainer: CallingTrainer, row: dict[str, float]) -> None:
        epochs = trainer.config.epochs
        progress = self._progress
        if not progress.terminal:
            progress.write(
                f"epoch {int(row['epoch'])}/{epochs}: train loss {row['train_loss']:.2f}, test "
                f"-ELBO {row['test_neg_elbo']:.2f} (rate {row['test_rate']:.2f}, distortion "
                f"{row['test_distortion']:.2f}), beta {row['beta']:.3g}, "
                f"{row['train_seconds']:.2f} s training"
            )
        self._epoch_start = (progress.elapsed, 0)
        self._tested = f", test -ELBO {row['test_neg_elbo']:.2f} (epoch {int(row['epoch'])})"

    def on_close(self, trainer: CallingTrainer) -> None:
        if self._progress is not None:
            self._progress.close()
