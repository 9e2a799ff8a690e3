"""The trainer's parts: assembling a run, the loop and its observers, the run directory."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from support import tiny_config

from pyro_vae import train
from pyro_vae.cli import main
from pyro_vae.training import Observer, Trainer, assemble, fit
from pyro_vae.training import run_dir as runs


class Recorder(Observer):
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def on_start(self, trainer):
        self.calls.append(("start", trainer.pos.epoch))

    def on_epoch_end(self, trainer, row):
        self.calls.append(("epoch", dict(row)))

    def on_close(self, trainer):
        self.calls.append(("close", None))

    def on_end(self, trainer, summary):
        self.calls.append(("end", summary))


def test_observers_see_every_epoch_and_the_end(tmp_path, small_data):
    recorder = Recorder()
    result = fit(tiny_config(tmp_path), small_data, observers=[recorder])
    kinds = [kind for kind, _ in recorder.calls]
    assert kinds == ["start", "epoch", "epoch", "close", "end"]
    rows = [row for kind, row in recorder.calls if kind == "epoch"]
    assert rows == result.metrics  # the rows of metrics.csv, as the loop recorded them
    csv_rows = runs.read_metrics(tmp_path / "run" / runs.METRICS)
    assert [r["test_neg_elbo"] for r in csv_rows] == pytest.approx(
        [r["test_neg_elbo"] for r in rows]
    )
    assert recorder.calls[-1][1] == result.summary
    assert not (tmp_path / "run" / runs.FIGURES / "loss_curves.png").exists()  # fit: no figures


def test_a_stopped_run_closes_its_observers_but_does_not_end(tmp_path, small_data, monkeypatch):
    recorder = Recorder()
    from pyro_vae.training.stops import NonFiniteLoss

    def nan_step(self, x):
        return torch.tensor(float("nan"))

    monkeypatch.setattr(Trainer, "_step", nan_step)
    with pytest.raises(NonFiniteLoss, match="at step 1"):
        fit(tiny_config(tmp_path, check_reference=False), small_data, observers=[recorder])
    assert [kind for kind, _ in recorder.calls] == ["start", "close"]


def test_overwrite_leaves_the_old_run_alone_until_everything_is_checked(tmp_path, small_data):
    """A bad input with --overwrite fails before the old run is touched."""
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--hidden", "16", "--z-dim", "2", "--no-progress",
                 "--out", str(out)]) == 0  # fmt: skip
    before = (out / runs.CHECKPOINT).read_bytes()
    for bad in (["--dataset", "npz", "--data-dir", str(tmp_path / "missing.npz")],
                ["--binarize", "none"]):  # fmt: skip
        assert main(["train", "--overwrite", "--out", str(out), "--no-progress", *bad]) == 2
        assert (out / runs.CHECKPOINT).read_bytes() == before
        assert (out / runs.SUMMARY).exists() and (out / runs.CONFIG).exists()


def test_overwrite_removes_the_old_record_before_the_new_run_starts(
    tmp_path, small_data, monkeypatch
):
    """A replacing run that fails before its first checkpoint leaves no old checkpoint behind
    for --resume to continue with the new options."""
    from pyro_vae.training.stops import NonFiniteLoss

    fit(tiny_config(tmp_path, epochs=1), small_data)
    out = tmp_path / "run"
    assert (out / runs.CHECKPOINT).exists() and (out / runs.SUMMARY).exists()
    monkeypatch.setattr(Trainer, "_step", lambda self, x: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLoss):
        fit(tiny_config(tmp_path, epochs=1, lr=0.01), small_data, overwrite=True)
    assert not (out / runs.CHECKPOINT).exists() and not (out / runs.SUMMARY).exists()
    assert runs.read_metrics(out / runs.METRICS) == []
    assert '"lr": 0.01' in (out / runs.CONFIG).read_text()


def test_training_leaves_pyros_param_store_alone_and_the_model_ready_for_svi(tmp_path, small_data):
    pyro.clear_param_store()
    result = train(tiny_config(tmp_path), small_data)  # figures included
    assert not list(pyro.get_param_store().keys())  # the optimizer held the parameters
    vae = result.vae
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    svi.step(torch.bernoulli(small_data.train_x[:32]))
    assert any(k.startswith("decoder$$$") for k in pyro.get_param_store().keys())


def test_a_trainer_without_a_directory_writes_nothing(tmp_path, small_data):
    """As the benchmark uses it: the parts and the loop, no files."""
    trainer = Trainer(assemble(tiny_config(tmp_path, check_reference=False), small_data))
    seconds = trainer.run_epoch()
    assert seconds > 0 and trainer.pos.epoch == 1 and trainer.pos.step == 8
    assert not (tmp_path / "run").exists()


def test_the_train_loss_is_per_image_over_the_epochs_own_images(tmp_path, small_data, monkeypatch):
    """500 images in batches of 64, the last batch 52: train_loss is the summed batch losses
    over the 500 images trained on, not over 8 x 64 = 512."""
    monkeypatch.setattr(Trainer, "_step", lambda self, x: torch.tensor(10.0 * x.shape[0]))
    result = fit(tiny_config(tmp_path, epochs=1, check_reference=False), small_data)
    assert small_data.train_x.shape[0] == 500
    assert result.metrics[0]["train_loss"] == pytest.approx(10.0, rel=1e-6)
