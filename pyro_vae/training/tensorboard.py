"""TensorBoard event files for a run, in RUN_DIR/tensorboard, so that ``tensorboard --logdir
runs/`` shows every run under ``runs/`` side by side.

Written through PyTorch's :class:`torch.utils.tensorboard.SummaryWriter` (the ``tensorboard``
package): per epoch, the scalars of metrics.csv (losses, rate, distortion, beta, seconds);
reconstructions of test images and samples from the prior after the first epoch, every
``image_every`` epochs and the last; the options of the run as hyperparameters, with the
final test -ELBO and (once ``pyro-vae evaluate`` has run) the test log p(x) as its metrics.
The x axis is the epoch. A resumed run appends to the same directory and tells TensorBoard to
drop any points past its checkpoint (``purge_step``), so a curve never doubles back.

The writer appends to its event file from a thread of its own; an error there (no space left)
is kept by the writer and raised again in the training thread at its next write or flush,
where it becomes a :class:`RunFileError` naming the file. The thread itself prints nothing.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .atomic_files import RunFileError
from .observers import CallingTrainer, Observer
from .options import options
from .run_dir import TENSORBOARD

IMAGES_SHOWN = 16
# metrics.csv's columns as TensorBoard tags: grouped into sections by the part before "/"
SCALAR_TAGS = {
    "train_loss": "loss/train",
    "train_neg_elbo": "neg_elbo/train",
    "test_neg_elbo": "neg_elbo/test",
    "train_rate": "rate/train",
    "test_rate": "rate/test",
    "train_distortion": "distortion/train",
    "test_distortion": "distortion/test",
    "beta": "schedule/beta",
    "train_seconds": "time/train_seconds",
    "eval_seconds": "time/eval_seconds",
}
LOG_PX_TAG = "log_px/test"
LOG_PX_AIS_TAG = "log_px_ais/test"
HPARAM_METRICS = ("neg_elbo/test", LOG_PX_TAG)

log = logging.getLogger(__name__)
MISSING = (
    "TensorBoard logging is off: the tensorboard package is not installed "
    "(pip install tensorboard, or pass --no-tensorboard to say so)"
)


KEPT = "the TensorBoard log keeps what was written before (TensorBoard skips a cut-off record)"
Hook = Callable[[threading.ExceptHookArgs], object]


def _quiet_kept_errors(previous: Hook) -> Hook:
    """A thread exception hook that prints nothing for an error its thread keeps for another
    to raise (the writer thread's ``exception``), and hands anything else to ``previous``."""

    def hook(args: threading.ExceptHookArgs) -> None:
        if getattr(args.thread, "exception", None) is not args.exc_value:
            previous(args)

    return hook


@functools.cache
def _quiet_writer_threads() -> None:
    """Install :func:`_quiet_kept_errors` once (a hook installed later keeps its place)."""
    threading.excepthook = _quiet_kept_errors(threading.excepthook)


def summary_writer(directory: Path, purge_step: int | None = None) -> Any | None:
    """A SummaryWriter on ``directory``, or None (and one warning) without ``tensorboard``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning(MISSING)
        return None
    _quiet_writer_threads()
    try:
        return SummaryWriter(str(directory), purge_step=purge_step)
    except OSError as err:
        raise RunFileError.of(err, directory, KEPT) from err


def writing(writer: Any, directory: Path, write: Callable[[Any], None]) -> None:
    """``write(writer)``; an error of the writer's thread, raised again here, as the
    :class:`RunFileError` of its event file."""
    try:
        write(writer)
    except OSError as err:
        file_writer = getattr(writer, "file_writer", None)
        path = getattr(getattr(file_writer, "event_writer", None), "_file_name", directory)
        raise RunFileError.of(err, path, KEPT) from err


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """The options that shape the run's result, as TensorBoard accepts them: those that apply
    (None: not applied), without the ones that may change on resume (device, progress, ...)."""
    shown = {}
    every = options()
    given = {k: v for k, v in config.items() if k in every}
    for name, value in {**given, **config.get("part_options", {})}.items():
        if value is None or (name in every and every[name].resumable):
            continue
        shown[name] = " ".join(map(str, value)) if isinstance(value, list | tuple) else value
    return shown


class TensorBoardLog(Observer):
    """Writes the run's event files (see the module doc)."""

    def __init__(self, run_dir: Path, image_every: int = 10) -> None:
        self.directory = Path(run_dir) / TENSORBOARD
        self.image_every = image_every
        self._writer: Any | None = None

    def on_start(self, trainer: CallingTrainer) -> None:
        resumed = trainer.pos.epoch > 0 or trainer.pos.batch > 0
        # points of epochs after the checkpoint were written by the run that stopped: drop them
        self._writer = summary_writer(self.directory, trainer.pos.epoch + 1 if resumed else None)
        if self._writer is None or resumed:
            return
        from torch.utils.tensorboard.summary import hparams

        metrics = dict.fromkeys(HPARAM_METRICS, 0.0)  # names only: values are the scalars
        summaries = hparams(hyperparameters(trainer.config.as_dict()), metrics)
        self._write(lambda writer: [writer.file_writer.add_summary(s) for s in summaries])

    def on_epoch_end(self, trainer: CallingTrainer, row: dict[str, float]) -> None:
        if self._writer is not None:
            self._write(lambda _: self._epoch(trainer, row))

    def _write(self, write: Callable[[Any], None]) -> None:
        try:
            writing(self._writer, self.directory, write)
        except RunFileError:
            self._writer = None  # its thread has stopped: nothing is left to write or close
            raise

    def _epoch(self, trainer: CallingTrainer, row: dict[str, float]) -> None:
        epoch = int(row["epoch"])
        for key, tag in SCALAR_TAGS.items():
            if key in row:
                self._writer.add_scalar(tag, row[key], epoch)
        last = epoch == trainer.config.epochs
        if epoch == 1 or last or epoch % self.image_every == 0:
            self._images(trainer, epoch)
        self._writer.flush()  # a killed run keeps every finished epoch

    @torch.no_grad()
    def _images(self, trainer: CallingTrainer, epoch: int) -> None:
        data, vae = trainer.parts.data, trainer.vae
        if len(data.shape) != 3 or data.context_dim:  # not images, or rows with a context
            return
        was_training = vae.training
        vae.eval()
        x = trainer.parts.binarizer.test_x[:IMAGES_SHOWN]
        pairs = torch.cat([x, vae.reconstruct(x)])  # originals above, reconstructions below
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            torch.manual_seed(0)  # the same draws of z every time: the samples show learning
            samples = vae.sample(IMAGES_SHOWN * 4)
        vae.train(was_training)
        shape = (-1, *data.shape)
        for tag, images in (("reconstructions", pairs), ("samples", samples)):
            grid = images.reshape(shape).float().clamp(0, 1).cpu()
            channels = grid.shape[1]  # grey or RGB as they are; of 2 the first, of RGBA its RGB
            grid = grid[:, :1] if channels == 2 else grid[:, :3] if channels > 3 else grid
            self._writer.add_images(tag, grid, epoch)

    def on_close(self, trainer: CallingTrainer) -> None:
        if self._writer is not None:
            self._write(lambda writer: writer.close())  # raises what the writer thread kept
            self._writer = None


def log_evaluation(run_dir: Path, epoch: int, result: dict[str, Any]) -> None:
    """Add ``pyro-vae evaluate``'s test log p(x) to the run's TensorBoard log, at its epoch
    (nothing if the run has no log: it was trained with ``--no-tensorboard``)."""
    directory = Path(run_dir) / TENSORBOARD
    values = {
        LOG_PX_TAG: result.get("test_log_likelihood"),
        LOG_PX_AIS_TAG: (result.get("ais") or {}).get("test_log_likelihood"),
    }
    values = {tag: v for tag, v in values.items() if v is not None and v == v}  # NaN: not measured
    if not directory.is_dir() or not values:
        return
    writer = summary_writer(directory)
    if writer is not None:

        def write(writer: Any) -> None:
            for tag, value in values.items():
                writer.add_scalar(tag, value, epoch)
            writer.close()  # raises what the writer thread kept

        writing(writer, directory, write)
