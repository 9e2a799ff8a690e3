"""Observers of the training loop: what is recorded or shown as it runs.

The loop calls each observer (on rank 0 of a multi-process run) at fixed points: when it
starts, after each epoch with that epoch's metrics row, when it closes (always, finished or
stopped) and when it has finished, with the summary. Recording the metrics and showing progress
live here; drawing figures is :class:`pyro_vae.report.FiguresAtEnd`. A new logger (TensorBoard,
say) is one more observer.
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

from .metrics import METRIC_FIELDS
from .run_dir import MetricsLog, RunDirectory

# Each method receives the pyro_vae.training.loop.Trainer that calls it (its config, position,
# metrics, model and parts); observers do not import the loop that drives them.
CallingTrainer = Any


class Observer:
    """Does nothing at every point; subclasses override the points they need."""

    def on_start(self, trainer: CallingTrainer) -> None:
        """Before the first step of this process's run (resumed runs included)."""

    def on_epoch_end(self, trainer: CallingTrainer, row: dict[str, float]) -> None:
        """After an epoch was trained and measured; ``row`` is its line of metrics.csv."""

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
        self._log = self.run_dir.metrics_log(METRIC_FIELDS)

    def on_epoch_end(self, trainer: CallingTrainer, row: dict[str, float]) -> None:
        self._log.append(row)

    def on_close(self, trainer: CallingTrainer) -> None:
        if self._log is not None:
            self._log.close()


class ProgressBar(Observer):
    """A progress bar over epochs, with the last epoch's training loss and test -ELBO."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None

    def on_start(self, trainer: CallingTrainer) -> None:
        self._bar = tqdm(
            total=trainer.config.epochs, initial=trainer.pos.epoch, desc="train", unit="epoch"
        )

    def on_epoch_end(self, trainer: CallingTrainer, row: dict[str, float]) -> None:
        self._bar.update(1)
        self._bar.set_postfix(train=f"{row['train_loss']:.2f}", test=f"{row['test_neg_elbo']:.2f}")

    def on_close(self, trainer: CallingTrainer) -> None:
        if self._bar is not None:
            self._bar.close()
