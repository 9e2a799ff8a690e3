"""Data given from Python: any tensor, array, pair, Dataset or DataLoader trains; the run says
so, and reading it asks for the data again rather than loading a built-in set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import pyro_vae
from pyro_vae.cli import main
from pyro_vae.training import run_dir as runs

SMALL = {"epochs": 1, "batch_size": 50, "hidden": (16,), "z_dim": 2, "progress": False,
         "tensorboard": False}  # fmt: skip


@pytest.fixture
def digits(mnist_sample) -> torch.Tensor:
    """300 digits as (N, 1, 28, 28) grey levels in [0, 1]."""
    return mnist_sample.train_x[::13][:300].reshape(-1, 1, 28, 28)


@pytest.mark.parametrize("kind", ["tensor", "array", "pair", "dataset", "loader"])
def test_any_form_of_the_data_trains_and_is_recorded_as_given(tmp_path, digits, kind):
    data = {
        "tensor": digits,
        "array": digits.numpy(),
        "pair": (digits[:250], digits[250:]),
        "dataset": TensorDataset(digits, torch.zeros(len(digits))),
        "loader": DataLoader(TensorDataset(digits), batch_size=7),
    }[kind]
    out = tmp_path / kind
    result = pyro_vae.train(data=data, out=str(out), **SMALL)
    config = json.loads((out / runs.CONFIG).read_text())
    assert config["dataset"] == "given"
    record = config["data_source"]
    assert record["format"] == "given" and record["shape"] == [1, 28, 28]
    assert (record["train"], record["test"]) == (250, 50) if kind == "pair" else (270, 30)
    assert result.summary["num_train"] == record["train"]
    assert ("sha256" in record) == (kind in ("tensor", "array", "pair"))


def test_a_run_on_given_data_asks_for_them_again(tmp_path, digits, capsys):
    out = tmp_path / "run"
    pyro_vae.train(data=digits, out=str(out), **SMALL)
    assert main(["report", str(out)]) == 0  # (from the run's files: no data needed)
    capsys.readouterr()
    for command in (["evaluate", str(out)], ["sample", str(out)]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "data were given from Python: pass them again" in err[0]
    with pytest.raises(ValueError, match="pass them again"):
        pyro_vae.load_run(out)
    run = pyro_vae.load_run(out, data=digits)
    assert run.test_x.shape == (30, 784)
    other = digits.clone()
    other[0] = 1 - other[0]
    with pytest.raises(ValueError, match="not the data this run was trained on"):
        pyro_vae.load_run(out, data=other)


def test_a_given_run_resumes_with_the_same_data(tmp_path, digits):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    pyro_vae.train(data=digits, out=str(straight), **{**SMALL, "epochs": 2})
    pyro_vae.train(data=digits, out=str(resumed), **SMALL)
    pyro_vae.train(data=digits, out=str(resumed), resume=True, epochs=2)
    want = runs.load_checkpoint(straight / runs.CHECKPOINT)["model"]
    got = runs.load_checkpoint(resumed / runs.CHECKPOINT)["model"]
    for name, value in want.items():
        assert torch.equal(got[name], value), name


def test_image_data_takes_arrays_and_no_labels(digits):
    flat = digits.reshape(len(digits), -1).numpy()
    data = pyro_vae.ImageData(flat[:200], None, flat[200:], None).validate()
    assert isinstance(data.train_x, torch.Tensor) and data.test_y.tolist() == [0] * 100


def test_a_layout_that_cannot_be_told_is_asked_for(tmp_path):
    cubes = np.zeros((20, 4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="--layout nchw or --layout nhwc"):
        pyro_vae.train(data=cubes, out=str(tmp_path / "r"), **SMALL)
    assert not (tmp_path / "r").exists()


def test_a_path_given_to_train_is_read_by_path(tmp_path, digits):
    """data="file.npy" is the --data option: the run records the file, so a command can read
    it again (no data= needed)."""
    path = tmp_path / "digits.npy"
    np.save(path, (digits * 255).round().byte().numpy())
    out = tmp_path / "run"
    pyro_vae.train(data=path, out=str(out), **SMALL)
    config = json.loads((out / runs.CONFIG).read_text())
    assert config["dataset"] == "file" and config["data"] == str(path)
    assert pyro_vae.load_run(out).test_x.shape == (30, 784)
