"""``--tracker mlflow``: the run as an MLflow run, through MLflow's own client
(:class:`mlflow.tracking.MlflowClient`; MLflow is imported only when the tracker connects).

- **Where.** ``--tracking-uri``, else MLflow's own choice (``MLFLOW_TRACKING_URI``, else a
  local store in the current directory: ``sqlite:///mlflow.db`` from MLflow 3 on, ``./mlruns``
  before), a local path made absolute. The experiment: ``--experiment``, else
  ``MLFLOW_EXPERIMENT_NAME``, else MLflow's ``Default``.
- **What.** At the start: a run named after the run directory, tagged with the pyro-vae
  version and the run directory's path, with the options that apply as its parameters
  (flattened, values cut to MLflow's length limit). Each epoch: its row of metrics.csv as
  metrics at step = epoch, in one call, made by MLflow's own thread while training goes on.
  At the end: the summary's other numbers as metrics, and config.json, summary.json,
  metrics.csv and figures/ as artifacts. The run ends FINISHED when every epoch was trained,
  KILLED when a signal stopped it, FAILED otherwise.
- **Resume.** RUN_DIR/tracker.json records the MLflow run; a resumed run continues it (and
  logs the epochs it lacks, such as those trained while the server was away) rather than
  starting another. Parameters keep the values the run started with (MLflow refuses to
  change one): ``--epochs`` raised on resume is in config.json.
- **A local file store** (``file:``) is kept by MLflow 3 behind ``MLFLOW_ALLOW_FILE_STORE``;
  naming one is taken as that consent, which is set for this process where it is not set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ...version import __version__
from ..observers import CallingTrainer
from ..run_dir import CONFIG, FIGURES, METRICS, SUMMARY
from ..stops import Terminated, TrainingInterrupted
from .base import TRACKERS, Tracker, TrackerError

MISSING = "--tracker mlflow needs MLflow: pip install 'pyro-vae[mlflow]'"
STOPPED = (TrainingInterrupted, KeyboardInterrupt, Terminated)  # KILLED, not FAILED
PARAM_LIMIT = 500  # MLflow's limit on a parameter's length where it does not say its own
BATCH_PARAMS, BATCH_METRICS = 100, 1000  # the most log_batch takes at once
# the start's requests to a server: one retry, 10 s each (MLflow's own: 7 retries, 120 s)
ASYNC_LOG = "mlflow.utils.async_logging.async_logging_queue"  # where MLflow's thread reports
QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def resolved_uri(uri: str) -> str:
    """``uri`` with a local store's path made absolute, so that a run resumed from another
    directory finds its store (``file:`` and plain paths, ``sqlite:///``); others as given."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    parsed = urlparse(uri)
    if parsed.scheme == "file" and not parsed.netloc:
        return Path(unquote(parsed.path)).resolve().as_uri()
    if parsed.scheme == "" and uri != "databricks":  # a path
        return Path(uri).resolve().as_uri()
    return uri


def flat_params(config: dict[str, Any]) -> dict[str, str]:
    """A config.json as MLflow parameters: the options that apply (not None), the user's
    parts' options by their names, nested records as ``data_source.path``, values as text."""
    found: dict[str, str] = {}

    def add(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                add(f"{key}.{k}" if key else str(k), v)
        elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
            for i, v in enumerate(value):
                add(f"{key}.{i}", v)
        elif value is not None and value != []:
            found[key] = str(value)

    add("", {k: v for k, v in config.items() if k != "part_options"})
    add("", config.get("part_options", {}))
    return found


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@TRACKERS.register("mlflow")
class MLflowTracker(Tracker):
    """The run as an MLflow run (see the module doc)."""

    client: Any = None
    run_id: str | None = None
    _outside: BaseException | None = None
    _pending: Any = None  # the last row's logging, under way in MLflow's thread
    _last = 0  # the last epoch MLflow had when this process started

    def connect(self, resume: bool) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise TrackerError(MISSING) from None
        self.given = self.config.tracking_uri
        saved = self.record() if resume else {}
        if saved.get("tracker") == "mlflow" and saved.get("tracking_uri") == self.given:
            self.uri = saved["resolved_uri"]
        else:
            saved = {}
            self.uri = resolved_uri(self.given or _mlflow_default())
        if self.uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            with _quick_answer():
                self._reach(MlflowClient, saved)
        except ImportError as err:  # the store's own packages (SQLAlchemy for sqlite)
            raise TrackerError(f"{MISSING} ({_missing_package(err)} for {self.uri})") from None

    def _reach(self, client: Any, saved: dict[str, Any]) -> None:
        self.client = client(tracking_uri=self.uri)
        self.run_id = self._saved_run(saved.get("run_id"))
        self.experiment_id = self._experiment() if self.run_id is None else None

    def _saved_run(self, run_id: str | None) -> str | None:
        """The MLflow run a resumed run continues: the one it recorded, if still there."""
        if run_id is None:
            return None
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as err:
            if getattr(err, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                return None  # deleted for good: a new run takes its place
            raise
        return run_id if run.info.lifecycle_stage == "active" else None

    def _experiment(self) -> str:
        name = self.config.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            return self.client.create_experiment(name)
        if experiment.lifecycle_stage != "active":
            raise TrackerError(
                f"--tracker mlflow: the experiment {name!r} is deleted in {self.uri}: restore "
                "it, or choose another --experiment"
            )
        return experiment.experiment_id

    def on_start(self, trainer: CallingTrainer) -> None:
        self._outside = sys.exc_info()[1]  # one being handled where training was called
        logging.getLogger(ASYNC_LOG).addFilter(self._theirs)
        params = flat_params(trainer.config.as_dict())
        if self.run_id is None:
            tags = {"pyro_vae.version": __version__, "pyro_vae.run_dir": str(self._dir())}
            run = self.client.create_run(self.experiment_id, run_name=self._dir().name, tags=tags)
            self.run_id = run.info.run_id
            self.keep_record(
                tracking_uri=self.given,
                resolved_uri=self.uri,
                experiment_id=run.info.experiment_id,
                run_id=self.run_id,
            )
            logged: dict[str, str] = {}
            last = 0
        else:
            self.client.update_run(self.run_id, status="RUNNING")
            logged = self.client.get_run(self.run_id).data.params
            history = self.client.get_metric_history(self.run_id, "train_loss")
            last = max((m.step for m in history), default=0)
        self._log_params({k: v for k, v in params.items() if k not in logged})
        self._last = last  # a killed run may have sent an epoch its checkpoint does not have
        missing = [m for row in trainer.metrics if row["epoch"] > last for m in self._metrics(row)]
        for chunk in _chunks(missing, BATCH_METRICS):  # epochs MLflow lacks: a resumed run's
            self.client.log_batch(self.run_id, metrics=chunk)

    def _dir(self) -> Path:
        return self.run_dir.path.resolve()

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        limit = _param_limit()
        items = [Param(k, v[:limit]) for k, v in params.items()]
        for chunk in _chunks(items, BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=chunk)

    @staticmethod
    def _metrics(row: dict[str, Any], skip: tuple[str, ...] = ("epoch",)) -> list[Any]:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(row.get("epoch", 0))
        return [
            Metric(key, float(value), now, step)
            for key, value in row.items()
            if key not in skip and isinstance(value, int | float) and not isinstance(value, bool)
        ]

    def on_epoch_end(self, trainer: CallingTrainer, row: dict[str, float]) -> None:
        """The row, sent by MLflow's own thread while the next epoch trains (MLflow's
        asynchronous logging); the last epoch's, long done, is waited for first, so that an
        error of it comes out here."""
        self.wait()
        if row["epoch"] <= self._last:  # sent before the run was stopped: each epoch once
            return
        self._pending = self.client.log_batch(
            self.run_id, metrics=self._metrics(row), synchronous=False
        )

    def _theirs(self, record: logging.LogRecord) -> bool:
        """MLflow's own line for a row of this run it failed to log: left out, as the error
        comes out of :meth:`wait`, to be reported once."""
        return self.run_id is None or f"Run Id {self.run_id}:" not in record.getMessage()

    def wait(self) -> None:
        """Until the last row sent has been logged (its error, if it failed)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.wait()

    def on_close(self, trainer: CallingTrainer) -> None:
        """End the MLflow run: FINISHED, KILLED (a signal, an observer's stop request) or
        FAILED (an error); the loop calls this while the error that stopped it, if any, is on
        its way out."""
        if self.run_id is None:
            return
        logging.getLogger(ASYNC_LOG).removeFilter(self._theirs)
        self.wait()
        error = sys.exc_info()[1]
        error = None if error is self._outside else error
        done = error is None and trainer.pos.epoch >= trainer.config.epochs
        request = getattr(trainer, "stop_request", None)
        stopped = isinstance(error, STOPPED) or (error is not None and error is request)
        status = "FINISHED" if done else "KILLED" if stopped else "FAILED"
        self.client.set_terminated(self.run_id, status)

    def on_end(self, trainer: CallingTrainer, summary: dict[str, Any]) -> None:
        """The summary's numbers that no epoch's row has, and the run's files as artifacts."""
        last = trainer.metrics[-1] if trainer.metrics else {}
        numbers = {k: v for k, v in summary.items() if k not in last}
        metrics = self._metrics({**numbers, "epoch": last.get("epoch", 0)})
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
        for name in (CONFIG, SUMMARY, METRICS):
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        if (self.run_dir / FIGURES).is_dir():
            self.client.log_artifacts(self.run_id, str(self.run_dir / FIGURES), FIGURES)


@contextlib.contextmanager
def _quick_answer() -> Iterator[None]:
    """A server that does not answer is known in seconds, not after MLflow's minutes of
    retries: :data:`QUICK` for the requests made here, where the environment sets nothing;
    and no notes of MLflow's as it makes a new sqlite store."""
    unset = [name for name in QUICK if name not in os.environ]
    os.environ.update({name: QUICK[name] for name in unset})
    quiet = logging.getLogger("mlflow.store.db.utils")  # "Creating initial ... tables" lines
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        yield
    finally:
        quiet.setLevel(level)
        for name in unset:
            os.environ.pop(name, None)


def _mlflow_default() -> str:
    """MLflow's own tracking URI: ``MLFLOW_TRACKING_URI``, else its local default."""
    import mlflow

    return mlflow.get_tracking_uri()


def _param_limit() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:
        return PARAM_LIMIT
    return int(MAX_PARAM_VAL_LENGTH)


def _missing_package(err: ImportError) -> str:
    """The package an ImportError misses, in words."""
    return f"no {err.name}" if err.name else " ".join(str(err).split())
