"""``--tracker``: a run sent to an experiment tracker as it trains, read back with the tracker's
own client. MLflow: parameters, per-epoch metrics, artifacts and status as the run directory
has them; a resumed run continues its MLflow run; a tracker out of reach stops the command
before anything is written (``stop``) or is left out with one line (``warn``); one that fails
mid-run is reported once and the run completes."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

from pyro_vae import train
from pyro_vae.cli import main
from pyro_vae.data import ImageData
from pyro_vae.training import Observer, TrainConfig, TrainingInterrupted
from pyro_vae.training import run_dir as runs
from pyro_vae.training.run import resumed_config
from pyro_vae.training.trackers import TRACKERS, MLflowTracker, Tracker
from pyro_vae.training.trackers.mlflow_tracker import flat_params, resolved_uri

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

TINY = ["train", "--dataset", "mnist-sample", "--hidden", "16", "--z-dim", "2", "--no-progress",
        "--no-tensorboard"]  # fmt: skip


@pytest.fixture(autouse=True)
def _mlflow_here(monkeypatch):
    """No MLflow setting of the machine reaches the tests; a server that is down is known at
    once; the file store's consent is the tracker's to give."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")


def _train(*argv: str) -> int:
    return main([*TINY, *argv])


@pytest.fixture
def small_data(mnist_sample):
    d = mnist_sample
    return ImageData(d.train_x[::8], d.train_y[::8], d.test_x[::5], d.test_y[::5])


def _run(out, data, **options):
    """A tiny run from Python, as tests/training/test_training.py makes them."""
    base = dict(epochs=2, hidden=(16,), z_dim=2, progress=False, tensorboard=False, out=str(out))
    return train(data=data, **(base | options))


def _tracked(out) -> tuple[MlflowClient, str]:
    record = json.loads((out / runs.TRACKER).read_text())
    return MlflowClient(tracking_uri=record["resolved_uri"]), record["run_id"]


def test_a_tracked_run_is_an_mlflow_run_with_the_run_directorys_record(tmp_path, small_data):
    out, store = tmp_path / "run", tmp_path / "mlruns"
    _run(out, small_data, tracker="mlflow", tracking_uri=f"file:{store}", experiment="tiny")
    client, run_id = _tracked(out)
    assert client.tracking_uri == store.as_uri()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.tags["pyro_vae.run_dir"] == str(out.resolve())
    assert client.get_experiment(run.info.experiment_id).name == "tiny"
    config = json.loads((out / runs.CONFIG).read_text())
    applied = {k: str(v) for k, v in config.items() if v is not None and not isinstance(v, dict)}
    applied = {k: v for k, v in applied.items() if v != "[]"}
    applied |= {f"data_source.{k}": str(v) for k, v in config["data_source"].items()}
    assert run.data.params == applied  # every option that applies, and no other
    rows = runs.read_metrics(out / runs.METRICS)
    for key in ("test_neg_elbo", "train_loss", "beta"):
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(r["epoch"], r[key]) for r in rows]
    summary = json.loads((out / runs.SUMMARY).read_text())
    assert run.data.metrics["best_test_neg_elbo"] == summary["best_test_neg_elbo"]
    assert run.data.metrics["seconds_per_epoch"] == summary["seconds_per_epoch"]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {runs.CONFIG, runs.SUMMARY, runs.METRICS, runs.FIGURES} <= artifacts
    figures = {a.path for a in client.list_artifacts(run_id, runs.FIGURES)}
    drawn = {f"{runs.FIGURES}/{p.name}" for p in (out / runs.FIGURES).iterdir()}
    assert figures == drawn and f"{runs.FIGURES}/loss_curves.png" in figures


def test_a_resumed_run_continues_its_mlflow_run(tmp_path, monkeypatch, small_data):
    """In MLflow's own local store (the default: sqlite where MLflow 3 is installed), resumed
    from another directory: the same MLflow run, each epoch once."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    _run(out, small_data, epochs=1, tracker="mlflow")
    client, run_id = _tracked(out)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "Default"  # MLflow's own
    monkeypatch.chdir(out)  # the store is where it was, not in the new working directory
    train(data=small_data, out=str(out), resume=True, epochs=2)
    assert _tracked(out)[1] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["epochs"] == "1"  # as it began
    steps = [m.step for m in client.get_metric_history(run_id, "test_neg_elbo")]
    assert sorted(steps) == [1, 2]
    runs_there = client.search_runs([run.info.experiment_id])
    assert [r.info.run_id for r in runs_there] == [run_id]
    assert not list(out.glob("mlflow.db"))


def test_a_resumed_run_fills_in_the_epochs_its_tracker_missed(tmp_path, small_data):
    """A run resumed with a tracker it did not have logs the epochs before the resume."""
    out, store = tmp_path / "run", f"file:{tmp_path / 'mlruns'}"
    _run(out, small_data, epochs=1)
    train(data=small_data, out=str(out), resume=True, epochs=2, tracker="mlflow",
          tracking_uri=store)  # fmt: skip
    client, run_id = _tracked(out)
    rows = runs.read_metrics(out / runs.METRICS)
    history = sorted(client.get_metric_history(run_id, "test_neg_elbo"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["test_neg_elbo"]) for r in rows]


def _unwritable(tmp_path) -> str:
    (tmp_path / "a-file").write_text("")
    return f"file:{tmp_path / 'a-file' / 'mlruns'}"  # a store inside a file


@pytest.mark.parametrize("where", ["server", "store"])
def test_a_tracker_out_of_reach_stops_before_anything_is_written(tmp_path, capsys, where):
    uri = "http://127.0.0.1:9" if where == "server" else _unwritable(tmp_path)
    out = tmp_path / "run"
    assert _train("--out", str(out), "--tracker", "mlflow", "--tracking-uri", uri) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyro-vae: error: --tracker mlflow: "), err
    assert "Traceback" not in err
    assert not out.exists()  # nothing trained, nothing written


def test_a_tracker_out_of_reach_with_warn_is_left_out_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    code = _train("--epochs", "1", "--out", str(out), "--tracker", "mlflow",
                  "--tracking-uri", "http://127.0.0.1:9", "--tracker-errors", "warn")  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "127.0.0.1:9" in err, err
    assert "the run goes on without it" in err
    for name in (runs.CONFIG, runs.METRICS, runs.SUMMARY, runs.CHECKPOINT):
        assert (out / name).is_file(), name
    assert (out / runs.FIGURES / "loss_curves.png").is_file()
    assert not (out / runs.TRACKER).exists()


@pytest.fixture
def flaky():
    """A tracker of the user's that fails at its first epoch."""

    @TRACKERS.register("flaky")
    class Flaky(Tracker):
        calls: list[str] = []

        def on_start(self, trainer):
            self.calls.append("start")

        def on_epoch_end(self, trainer, row):
            self.calls.append("epoch")
            raise ConnectionError("the server went away")

        def on_end(self, trainer, summary):
            self.calls.append("end")

    yield Flaky
    del TRACKERS._entries["flaky"]


def test_a_tracker_failing_mid_run_is_reported_once_and_the_run_completes(tmp_path, capsys, flaky):
    out = tmp_path / "run"
    assert _train("--epochs", "2", "--out", str(out), "--tracker", "flaky") == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "--tracker flaky failed (the server went away); the run goes on without it" in err
    assert flaky.calls == ["start", "epoch"]  # left out after its failure
    assert len(runs.read_metrics(out / runs.METRICS)) == 2
    # reading the run back needs no tracker: one not registered now reads as none
    del TRACKERS._entries["flaky"]
    assert TrainConfig.from_dict(json.loads((out / runs.CONFIG).read_text())).tracker == "none"
    TRACKERS.register("flaky")(flaky)


class StoreGone(Observer):
    """Removes the MLflow store after the first epoch (the tracker, last, logs after it)."""

    def __init__(self, store) -> None:
        self.store = store

    def on_epoch_end(self, trainer, row):
        if row["epoch"] == 1:
            shutil.rmtree(self.store)


def test_an_mlflow_store_gone_mid_run_is_reported_once(tmp_path, small_data, capfd):
    """The row MLflow's thread fails to log comes out at the next epoch: one line of ours (and
    none of MLflow's), the tracker left out, the run complete."""
    out, store = tmp_path / "run", tmp_path / "mlruns"
    ours = logging.getLogger("pyro_vae")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    ours.addHandler(handler)
    try:
        _run(out, small_data, epochs=3, tracker="mlflow", tracking_uri=f"file:{store}",
             observers=[StoreGone(store)])  # fmt: skip
    finally:
        ours.removeHandler(handler)
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert message.startswith("--tracker mlflow failed (") and "does not exist" in message
    assert "the run goes on without it" in message
    assert "Failed to log run data" not in capfd.readouterr().err  # MLflow's own line
    assert len(runs.read_metrics(out / runs.METRICS)) == 3
    assert (out / runs.FIGURES / "loss_curves.png").is_file()


def test_mlflow_missing_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    assert _train("--out", str(tmp_path / "run"), "--tracker", "mlflow") == 2
    err = capsys.readouterr().err
    assert err == "pyro-vae: error: --tracker mlflow needs MLflow: pip install 'pyro-vae[mlflow]'\n"


@pytest.mark.parametrize(
    "error, status",
    [(None, "FINISHED"), (TrainingInterrupted(2, "stopped"), "KILLED"), (KeyError(1), "FAILED")],
)
def test_the_mlflow_run_ends_as_training_did(tmp_path, error, status):
    config = TrainConfig(epochs=1, tracker="mlflow", tracking_uri=f"file:{tmp_path}/mlruns")
    tracker = MLflowTracker(config, runs.RunDirectory(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    tracker.connect(resume=False)
    done = error is None
    trainer = SimpleNamespace(config=config, metrics=[], pos=SimpleNamespace(epoch=int(done)))
    tracker.on_start(trainer)
    try:
        try:
            if error is not None:
                raise error
        finally:
            tracker.on_close(trainer)
    except (TrainingInterrupted, KeyError):
        pass
    assert tracker.client.get_run(tracker.run_id).info.status == status


def test_a_run_resumed_with_tracker_none_drops_its_tracker_options(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    config = TrainConfig(tracker="mlflow", tracking_uri="http://127.0.0.1:9", out=str(out))
    (out / runs.CONFIG).write_text(json.dumps(config.as_dict()))
    resumed = resumed_config({"out": str(out), "tracker": "none"})
    assert (resumed.tracker, resumed.tracking_uri, resumed.experiment) == ("none", None, None)


def test_params_are_the_options_that_apply_and_local_stores_are_absolute(tmp_path, monkeypatch):
    record = {"z_dim": 2, "hidden": [16], "sigma": None, "part_options": {"df": 3.0},
              "plugins": [{"spec": "p.py", "sha256": "ab"}],
              "data_source": {"path": "x.npy"}}  # fmt: skip
    assert flat_params(record) == {"z_dim": "2", "hidden": "[16]", "df": "3.0",
                                   "plugins.0.spec": "p.py", "plugins.0.sha256": "ab",
                                   "data_source.path": "x.npy"}  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert resolved_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert resolved_uri("file:./mlruns") == (tmp_path.resolve() / "mlruns").as_uri()
    assert resolved_uri("mlruns") == (tmp_path.resolve() / "mlruns").as_uri()
    for kept in ("http://host:5000", "databricks", "sqlite:////abs/m.db"):
        assert resolved_uri(kept) == kept


def test_importing_pyro_vae_imports_no_mlflow():
    code = "import sys, pyro_vae, pyro_vae.training.trackers; print('mlflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr
