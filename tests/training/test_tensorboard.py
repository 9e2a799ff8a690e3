"""TensorBoard event files, read back with TensorBoard's own reader: the scalars are the
metrics.csv rows, images and hyperparameters are there, a resumed run does not double its
curves, logging does not change the run, and a missing package is one warning."""

from __future__ import annotations

import io
import logging
import shutil
import sys

import numpy as np
import pytest
from PIL import Image
from support import tiny_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from pyro_vae.training import evaluate_run, fit
from pyro_vae.training import run_dir as runs
from pyro_vae.training.tensorboard import MISSING, SCALAR_TAGS


def _read(run: str) -> EventAccumulator:
    events = EventAccumulator(f"{run}/tensorboard", size_guidance={"scalars": 0, "images": 0})
    return events.Reload()


def test_the_scalars_are_the_metrics_rows_and_images_come_with_them(tmp_path, small_data):
    result = fit(tiny_config(tmp_path, epochs=3), small_data)
    events = _read(str(tmp_path / "run"))
    for key, tag in SCALAR_TAGS.items():
        points = events.Scalars(tag)
        assert [p.step for p in points] == [1, 2, 3]
        assert [p.value for p in points] == pytest.approx([r[key] for r in result.metrics])
    for tag, height in (("reconstructions", 28 * 4), ("samples", 28 * 8)):
        images = events.Images(tag)
        assert [i.step for i in images] == [1, 3]  # the first epoch and the last
        assert (images[-1].width, images[-1].height) == (28 * 8, height)  # 8 images a row
    grid = np.asarray(
        Image.open(io.BytesIO(events.Images("reconstructions")[-1].encoded_image_string))
    )
    originals, reconstructions = grid[: 28 * 2], grid[28 * 2 :]  # two rows each
    assert set(np.unique(originals)) <= {0, 255}  # binarized test images
    assert len(np.unique(reconstructions)) > 50  # E[x | z]: grey levels


def test_the_options_that_apply_are_the_hyperparameters(tmp_path, small_data):
    fit(tiny_config(tmp_path, epochs=1, likelihood="gaussian", sigma=0.2), small_data)
    content = _read(str(tmp_path / "run")).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    hparams = {k: v for k, v in start.hparams.items()}
    assert hparams["sigma"].number_value == pytest.approx(0.2)
    assert hparams["likelihood"].string_value == "gaussian"
    assert hparams["hidden"].string_value == "32"
    assert "free_bits" not in hparams and "rank" not in hparams  # not applied: not shown
    assert "device" not in hparams and "progress" not in hparams  # do not shape the result
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"neg_elbo/test", "log_px/test"}


def test_evaluate_adds_log_px_at_the_runs_epoch(tmp_path, small_data):
    fit(tiny_config(tmp_path), small_data)
    result = evaluate_run(tmp_path / "run", 20, "cpu", progress=False, data=small_data)
    points = _read(str(tmp_path / "run")).Scalars("log_px/test")
    expected = result["test_log_likelihood"]
    assert [(p.step, p.value) for p in points] == [(2, pytest.approx(expected))]


def test_a_resumed_run_draws_each_epoch_once(tmp_path, small_data):
    """A run killed after epoch 2 was logged but before its checkpoint: resumed from epoch 1,
    TensorBoard shows the resumed run's epoch 2, not both."""
    fit(tiny_config(tmp_path), small_data)
    run = tmp_path / "run"
    shutil.copy(run / runs.PREVIOUS_CHECKPOINT, run / runs.CHECKPOINT)  # back to epoch 1
    (run / runs.SUMMARY).unlink()
    resumed = fit(tiny_config(tmp_path), small_data, resume=True)
    points = _read(str(run)).Scalars("neg_elbo/test")
    assert [p.step for p in points] == [1, 2]
    assert points[1].value == pytest.approx(resumed.metrics[1]["test_neg_elbo"])


def test_logging_leaves_the_run_as_it_was(tmp_path, small_data):
    """The images are drawn with their own random numbers: the training stream is untouched."""
    on = fit(tiny_config(tmp_path / "on"), small_data)
    off = fit(tiny_config(tmp_path / "off", tensorboard=False), small_data)
    assert on.metrics[-1]["test_neg_elbo"] == off.metrics[-1]["test_neg_elbo"]
    assert (tmp_path / "on" / "run" / "tensorboard").is_dir()
    assert not (tmp_path / "off" / "run" / "tensorboard").exists()


def test_without_the_package_the_run_warns_once_and_trains(
    tmp_path, small_data, monkeypatch, caplog
):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    package_log = logging.getLogger("pyro_vae")
    monkeypatch.setattr(package_log, "handlers", [caplog.handler])  # whatever the CLI set up
    monkeypatch.setattr(package_log, "propagate", False)
    result = fit(tiny_config(tmp_path), small_data)
    assert [r.getMessage() for r in caplog.records] == [MISSING]
    assert result.summary["test_neg_elbo"] > 0
    assert not (tmp_path / "run" / "tensorboard").exists()
