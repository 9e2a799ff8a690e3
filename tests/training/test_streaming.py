"""Streamed data: the same rows, the same algorithm, the same resume as the device path; the
choice between them by size, recorded; shards that do not overlap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pyro_vae import TrainConfig
from pyro_vae.cli import main
from pyro_vae.training import fit
from pyro_vae.training import run_dir as runs
from pyro_vae.training.distributed import Cluster
from pyro_vae.training.feeds import StreamFeed
from pyro_vae.training.run_data import RunData

SMALL = {"epochs": 1, "batch_size": 32, "hidden": (32,), "z_dim": 4, "progress": False,
         "tensorboard": False}  # fmt: skip


@pytest.fixture
def digits_npy(tmp_path, mnist_sample):
    """320 digits as an (N, 28, 28) uint8 .npy (a memory map when read)."""
    x = (mnist_sample.train_x[::12][:320] * 255).round().byte().reshape(-1, 28, 28).numpy()
    path = tmp_path / "digits.npy"
    np.save(path, x)
    return path


def _model(out) -> dict[str, torch.Tensor]:
    return runs.load_checkpoint(out / runs.CHECKPOINT)["model"]


def _train(path, out, **options):
    return fit(TrainConfig(data=str(path), out=str(out), **{**SMALL, **options}))


@pytest.mark.parametrize("likelihood", ["gaussian", "continuous-bernoulli"])
def test_a_streamed_run_equals_the_device_run_without_binarization(
    tmp_path, digits_npy, likelihood
):
    """With no binarization draw, the streamed path reads the same rows in the same order
    into the same steps: the trained parameters are equal bit for bit; and its numbers are
    nats per image like the device path's."""
    opts = {"likelihood": likelihood, "binarize": "none"}
    device = _train(digits_npy, tmp_path / "device", stream="never", **opts)
    streamed = _train(digits_npy, tmp_path / "stream", stream="always", workers=2, **opts)
    for name, value in _model(tmp_path / "device").items():
        assert torch.equal(_model(tmp_path / "stream")[name], value), name
    assert streamed.summary["test_neg_elbo"] == pytest.approx(device.summary["test_neg_elbo"])
    assert streamed.summary["data"]["read"] == "stream"
    assert device.summary["data"] == {"read": "device"}
    assert 0 <= streamed.summary["data"]["data_wait_share"] <= 1


def test_the_memory_budget_chooses_the_path_and_the_run_keeps_it(tmp_path, digits_npy):
    """The data as float32 (320 x 784 x 4 bytes = 1 MB) stream under a 100 KB budget and sit
    on the device under 10 MB; config.json records the choice and where the data are."""
    _train(digits_npy, tmp_path / "small", memory_budget="100K")
    _train(digits_npy, tmp_path / "large", memory_budget="10M")
    small = json.loads((tmp_path / "small" / runs.CONFIG).read_text())["data_source"]
    large = json.loads((tmp_path / "large" / runs.CONFIG).read_text())["data_source"]
    assert (small["read"], large["read"]) == ("stream", "device")
    assert small["path"] == str(digits_npy.resolve()) and small["format"] == "npy"
    assert small["shape"] == [1, 28, 28] and small["values"] == "8-bit"
    assert (small["train"], small["test"]) == (288, 32)  # --test-fraction 0.1, rounded up
    assert small["split"] == {"from": "test_fraction", "test_fraction": 0.1, "seed": 0}


def test_evaluate_reads_the_streamed_data_again_and_refuses_changed_data(
    tmp_path, digits_npy, capsys
):
    out = tmp_path / "run"
    _train(digits_npy, out, stream="always")
    assert main(["evaluate", str(out), "--num-samples", "4", "--no-progress"]) == 0
    measured = json.loads((out / "evaluation.json").read_text())
    assert measured  # (its numbers are checked for the device path elsewhere)
    x = np.load(digits_npy)
    x[0, 0, 0] ^= 1  # one pixel changed
    np.save(digits_npy, x)
    assert main(["evaluate", str(out), "--num-samples", "4", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not the data this run was trained on" in err[0]


def test_a_run_stops_when_its_file_changes_as_it_streams(tmp_path, digits_npy):
    """A file replaced while a run streams it is noticed at the next epoch's end: the run
    stops with one line, and the checkpoint of the epoch before stays whole."""
    out = tmp_path / "run"
    script = (
        "import sys, numpy as np\nfrom pyro_vae.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    args = [sys.executable, "-c", script, "train", "--data", str(digits_npy), "--stream",
            "always", "--epochs", "200", "--batch-size", "32", "--hidden", "32", "--z-dim", "4",
            "--out", str(out), "--no-progress", "--no-tensorboard",
            "--compile-from", "0"]  # fmt: skip
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / runs.CHECKPOINT).exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    x = np.load(digits_npy)
    np.save(digits_npy, 255 - x)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-2000:]
    assert "changed while this run read it" in err
    state = runs.load_checkpoint(out / runs.CHECKPOINT)
    assert 1 <= state["position"]["epoch"] < 200


def test_processes_read_disjoint_shards_of_each_global_batch(digits_npy):
    """Two processes cut each global batch of the same permutation in two: every row of an
    epoch is read by exactly one of them."""
    from pyro_vae.data.sources import open_source, split_source

    source = split_source(open_source(digits_npy), 0.1, 0)
    seen = []
    for rank in range(2):
        run_data = RunData(None, {}, source, 1 / 255)  # type: ignore[arg-type]
        feed = StreamFeed(run_data, "none", 0, 0, Cluster(rank, 2), torch.device("cpu"))
        perm = torch.randperm(len(source.train), generator=torch.Generator().manual_seed(5))
        batches = list(feed.batches(None, perm, 0, len(source.train) // 64, 64, 0))
        assert all(b.shape == (32, 784) for b in batches)
        seen.append(torch.cat(batches))
    rows = {tuple(r.tolist()) for r in torch.cat(seen)}
    every = torch.as_tensor(source.train.all_rows()).reshape(-1, 784).float() / 255
    assert len(rows) == len({tuple(r.tolist()) for r in every[perm[: len(rows)]]})
    assert not {tuple(r.tolist()) for r in seen[0]} & {tuple(r.tolist()) for r in seen[1]}


def test_a_streamed_run_killed_mid_epoch_resumes_bit_for_bit(tmp_path, digits_npy):
    """SIGKILL after a mid-epoch checkpoint: the resumed streamed run (a fresh binarization
    draw per batch, two workers) ends exactly where the unbroken run ends. (The killed run is
    started for 400 epochs, 14,400 steps: eager by --compile-from 0, as the others.)"""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    base = ["train", "--data", str(digits_npy), "--stream", "always", "--epochs", "2",
            "--batch-size", "8", "--hidden", "32", "--z-dim", "4", "--checkpoint-every", "5",
            "--workers", "2", "--no-progress", "--no-tensorboard",
            "--compile-from", "0"]  # fmt: skip
    assert main([*base, "--out", str(straight)]) == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyro_vae", *base, "--epochs", "400", "--out", str(killed)],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not (killed / runs.CHECKPOINT).exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped = runs.load_checkpoint(killed / runs.CHECKPOINT)["position"]
    assert stopped["step"] < 72  # killed before the end (2 epochs of 36 steps)
    assert main([*base, "--resume", "--out", str(killed)]) == 0
    for name, value in _model(straight).items():
        assert torch.equal(_model(killed)[name], value), name


def _binarized_batches(source, workers: int, epoch: int) -> torch.Tensor:
    run_data = RunData(None, {}, source, 1 / 255)  # type: ignore[arg-type]
    feed = StreamFeed(run_data, "dynamic", 3, workers, Cluster(0, 1), torch.device("cpu"))
    perm = torch.randperm(len(source.train), generator=torch.Generator().manual_seed(5))
    return torch.cat(list(feed.batches(None, perm, 0, len(source.train) // 32, 32, epoch)))


def test_the_binarization_draw_is_the_same_whoever_reads_the_rows(digits_npy):
    """The draw is made where the rows are read (a thread of the trainer, or spawned worker
    processes), seeded by the batch's place: the same bits either way, a fresh draw for
    another epoch, and a Bernoulli draw of the intensities."""
    from pyro_vae.data.sources import open_source, split_source

    source = split_source(open_source(digits_npy), 0.1, 0)
    in_thread = _binarized_batches(source, 0, epoch=1)
    in_workers = _binarized_batches(source, 2, epoch=1)
    assert torch.equal(in_thread, in_workers)
    assert set(in_thread.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(in_thread, _binarized_batches(source, 0, epoch=2))
    perm = torch.randperm(len(source.train), generator=torch.Generator().manual_seed(5))
    p = torch.as_tensor(source.train.read(perm[: len(in_thread)].numpy())).reshape(-1, 784) / 255
    # E[bit] = p: the mean over ~225,000 draws within 5 sd of sum p(1-p)
    sd = (p * (1 - p)).sum().sqrt()
    assert abs(in_thread.sum() - p.sum()) < 5 * sd


def test_read_ahead_raises_the_readers_error_in_order_and_stops_when_closed():
    import threading

    from pyro_vae.data.sources.stream import read_ahead

    def failing():
        yield torch.zeros(1)
        yield torch.ones(1)
        raise ValueError("row 7 of 'x.npy' cannot be read")

    got = read_ahead(failing(), depth=1)
    assert next(got).item() == 0 and next(got).item() == 1
    with pytest.raises(ValueError, match="row 7"):
        next(got)

    def endless():
        while True:
            yield torch.zeros(1)

    before = threading.active_count()
    got = read_ahead(endless(), depth=2)
    next(got)
    got.close()
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
