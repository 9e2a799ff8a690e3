"""Experiment trackers: observers that send a run to a tracking service as it trains, chosen
by ``--tracker NAME`` from :data:`TRACKERS` (``none``, ``mlflow``). One of your own is a class
registered by name (``docs/observers.md``)::

    @TRACKERS.register("print")
    class PrintTracker(Tracker):
        def on_epoch_end(self, trainer, row):
            print(row)
"""

from .base import ERROR_CHOICES, TRACKERS, Guarded, NoTracker, Tracker, TrackerError, attach_tracker
from .mlflow_tracker import MLflowTracker

__all__ = [
    "ERROR_CHOICES",
    "TRACKERS",
    "Guarded",
    "MLflowTracker",
    "NoTracker",
    "Tracker",
    "TrackerError",
    "attach_tracker",
]
