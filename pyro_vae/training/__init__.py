"""Running training: the options of a run, assembling its parts, the SVI loop and its
observers, the run directory (files, checkpoints, resume), the compiled step, several
processes, and reading a trained run back."""

from .assemble import Assembly, assemble, make_optimizer
from .checkpoint import CheckpointError
from .compiled import CompiledStep
from .devices import DeviceError, resolve_device
from .evaluate import evaluate_run
from .load import LoadedRun, load_run, read_config
from .loop import Trainer
from .observers import MetricsCSV, Observer, Progress
from .options import ConfigError, TrainConfig, options
from .run import TrainResult, fit
from .run_dir import RunDirectory, RunDirectoryError, RunInUse
from .stops import NonFiniteLoss, Terminated, TrainingInterrupted, terminate_on_sigterm

__all__ = [
    "Assembly",
    "CheckpointError",
    "CompiledStep",
    "ConfigError",
    "DeviceError",
    "LoadedRun",
    "MetricsCSV",
    "NonFiniteLoss",
    "Observer",
    "Progress",
    "RunDirectory",
    "RunDirectoryError",
    "RunInUse",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "Terminated",
    "TrainingInterrupted",
    "assemble",
    "evaluate_run",
    "fit",
    "load_run",
    "make_optimizer",
    "options",
    "read_config",
    "resolve_device",
    "terminate_on_sigterm",
]
