"""What every tracker shares: the :data:`TRACKERS` registry, the :class:`Tracker` observer a
name makes, and how a tracker that fails is handled.

A tracker is an :class:`~pyro_vae.training.observers.Observer` made from the run's config and
its run directory, with one more point, :meth:`Tracker.connect`, called before anything is
trained or written, where it reaches its service. If it cannot, ``--tracker-errors stop`` ends
the command in one line (:class:`TrackerError`: exit status 2), and ``warn`` says so in one
line and trains without it. Once training has started a tracker never stops the run: its
first failure is reported in one line and it is left out from then on (:class:`Guarded`); the
run directory keeps everything. The loop calls trackers, as every observer, on rank 0 only.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch

from ...registry import Registry
from ..atomic_files import write_json
from ..observers import CallingTrainer, Observer
from ..run_dir import TRACKER, RunDirectory

log = logging.getLogger(__name__)
ERROR_CHOICES = ("stop", "warn")
WITHOUT = "the run goes on without it (the run directory keeps everything)"


class TrackerError(ValueError):
    """A tracker that cannot be used: one line (exit status 2 from the command line)."""


class Tracker(Observer):
    """An observer chosen by ``--tracker NAME``: made from the run's ``config``
    (:class:`~pyro_vae.training.options.TrainConfig`) and its ``run_dir``; it overrides the
    points it needs, :meth:`connect` among them."""

    def __init__(self, config: Any, run_dir: RunDirectory) -> None:
        self.config, self.run_dir = config, run_dir

    def connect(self, resume: bool) -> None:
        """Reach the service, before anything is trained or written; raise if it cannot be.
        ``resume``: the run continues from its checkpoint."""

    def record(self) -> dict[str, Any]:
        """What this tracker wrote in RUN_DIR/tracker.json (empty if nothing)."""
        try:
            saved = json.loads((self.run_dir / TRACKER).read_text())
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def keep_record(self, **facts: Any) -> None:
        """Write RUN_DIR/tracker.json (atomically): what a resumed run needs to continue the
        tracker's record of it (its run on the service)."""
        if self.run_dir.writes:
            write_json(self.run_dir / TRACKER, {"tracker": self.config.tracker, **facts})


TRACKERS: Registry[Tracker] = Registry("tracker")


@TRACKERS.register("none")
class NoTracker(Tracker):
    """No tracker: the run directory (and TensorBoard) keep the run."""


def one_line(err: BaseException) -> str:
    """An error in one line: its message, or its type where it has none."""
    return " ".join(str(err).split()) or type(err).__name__


class Guarded(Observer):
    """Calls ``tracker`` at each point of the loop; its first error is reported in one line
    and it is called no more in this run (training goes on)."""

    def __init__(self, tracker: Tracker, name: str) -> None:
        self.tracker: Tracker | None = tracker
        self.name = name

    def _call(self, point: str, *args: Any) -> None:
        if self.tracker is None:
            return
        try:
            getattr(self.tracker, point)(*args)
        except Exception as err:
            self.tracker = None
            log.warning(f"--tracker {self.name} failed ({one_line(err)}); {WITHOUT}")

    def on_start(self, trainer: CallingTrainer) -> None:
        self._call("on_start", trainer)

    def on_step_end(self, trainer: CallingTrainer, epoch_loss: torch.Tensor) -> None:
        self._call("on_step_end", trainer, epoch_loss)

    def on_epoch_end(self, trainer: CallingTrainer, row: dict[str, float]) -> None:
        self._call("on_epoch_end", trainer, row)

    def on_close(self, trainer: CallingTrainer) -> None:
        self._call("on_close", trainer)

    def on_end(self, trainer: CallingTrainer, summary: dict[str, Any]) -> None:
        self._call("on_end", trainer, summary)


def attach_tracker(config: Any, run_dir: RunDirectory, resume: bool) -> Observer | None:
    """The tracker ``config.tracker`` names, connected (None: none, or one that could not be
    reached under ``--tracker-errors warn``). Only the process that writes the run calls it."""
    name = config.tracker
    saved = Tracker(config, run_dir).record().get("tracker") if resume else None
    if saved and saved != name:
        log.warning(f"the run was tracked with --tracker {saved}; it goes on with --tracker {name}")
    if name == "none":
        return None
    tracker = TRACKERS.create(name, config, run_dir)
    try:
        tracker.connect(resume)
    except Exception as err:
        message = one_line(err)
        if not isinstance(err, TrackerError):  # the service's own error: say whose it is
            message = f"--tracker {name}: {message}"
        if config.tracker_errors == "stop":
            raise TrackerError(message) from err
        log.warning(f"{message}; {WITHOUT}")
        return None
    return Guarded(tracker, name)
