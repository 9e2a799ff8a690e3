"""torchrun with two CPU processes on Gloo equals one process on the combined batch."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae import TrainConfig
from pyro_vae.training import Trainer, assemble
from pyro_vae.training import run_dir as runs

WORLD, BATCH, SEED = 2, 16, 3


@pytest.fixture
def data_file(tmp_path, mnist_sample):
    path = tmp_path / "digits.npz"
    x = (mnist_sample.train_x[::15][:256] * 255).round().byte().reshape(-1, 28, 28).numpy()
    test = (mnist_sample.test_x[::50] * 255).round().byte().reshape(-1, 28, 28).numpy()
    np.savez(path, train_x=x, test_x=test)
    return path


def _options(data_file, out, epochs: int = 1) -> list[str]:
    return [
        "train",
        "--dataset",
        "npz",
        "--data-dir",
        str(data_file),
        "--epochs",
        str(epochs),
        "--compile-from",  # a run of 400 epochs is killed: eager, as the runs it is held to
        "0",
        "--batch-size",
        str(BATCH),
        "--hidden",
        "32",
        "--z-dim",
        "4",
        "--seed",
        str(SEED),
        "--out",
        str(out),
        "--no-progress",
    ]


def _one_process_on_the_combined_batch(data_file, out) -> dict[str, torch.Tensor]:
    """The same algorithm in one process: each global batch of WORLD * BATCH images split in
    WORLD shards, each shard's loss with that rank's noise stream, gradients summed."""
    config = TrainConfig(
        dataset="npz",
        data_dir=str(data_file),
        epochs=1,
        batch_size=BATCH,
        hidden=(32,),
        z_dim=4,
        seed=SEED,
        out=str(out),
        progress=False,
    )
    t = Trainer(assemble(config))
    parts = t.parts
    streams = []
    for rank in range(WORLD):
        torch.manual_seed(SEED + rank)
        streams.append(torch.get_rng_state())
    parts.binarizer.set_state(t.pos.epoch_rng["binarize"])
    t.perm_generator.set_state(t.pos.epoch_rng["batches"])
    x_epoch = parts.binarizer.train_x()
    n_train = x_epoch.shape[0]
    perm = torch.randperm(n_train, generator=t.perm_generator)
    global_batch = WORLD * BATCH
    for step in range(n_train // global_batch):
        shards = x_epoch[perm[step * global_batch : (step + 1) * global_batch]].tensor_split(WORLD)
        parts.optimizer.zero_grad(set_to_none=True)
        for rank, x in enumerate(shards):
            torch.set_rng_state(streams[rank])
            parts.step_estimator.differentiable_loss(t.vae.model, t.vae.guide, x).backward()
            streams[rank] = torch.get_rng_state()
        parts.optimizer.step()
    return t.vae.state_dict()


def test_two_gloo_processes_equal_one_process(tmp_path, data_file):
    out = tmp_path / "ddp"
    done = _torchrun(*_options(data_file, out))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = runs.load_checkpoint(out / runs.CHECKPOINT)
    assert summary["position"]["step"] == 256 // (WORLD * BATCH)  # 8 steps of 32 images
    assert (out / runs.SUMMARY).exists()
    distributed = summary["model"]
    single = _one_process_on_the_combined_batch(data_file, tmp_path / "single")
    for name, value in single.items():
        # stated tolerance 1e-6 relative; gradient sums in another order would need it
        torch.testing.assert_close(distributed[name], value, rtol=1e-6, atol=1e-7, msg=name)


# A worker that aborted while the interpreter shut down, after its run ended (gloo's threads
# against Python's finalization; seen in three CI runs, never alone): torchrun reported it and
# ended the other worker. Workers now skip that shutdown (leave_worker_process); should the
# abort still come, a fresh run is started again once, over its directory. Any other failure,
# a resumed run's, and every assertion on the results, stands.
SHUTDOWN_ABORT = "terminate called without an active exception"


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    done = _torchrun_once(*args)
    if done.returncode != 0 and SHUTDOWN_ABORT in done.stderr and "--resume" not in args:
        done = _torchrun_once(*args, "--overwrite")
    return done


def _torchrun_once(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={WORLD}",
            "-m",
            "pyro_vae",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_resumed_multi_process_run_continues_bit_for_bit(tmp_path, data_file):
    """Every process's random state is kept in the checkpoint, so two processes stopped after
    one epoch and resumed end exactly where an uninterrupted two-epoch run ends."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _torchrun(*_options(data_file, straight, epochs=2)).returncode == 0
    assert _torchrun(*_options(data_file, resumed, epochs=1)).returncode == 0
    first = runs.load_checkpoint(resumed / runs.CHECKPOINT)
    assert len(first["rank_rng"]) == WORLD
    assert not torch.equal(first["rank_rng"][0]["torch"], first["rank_rng"][1]["torch"])
    done = _torchrun(*_options(data_file, resumed, epochs=2), "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    want = runs.load_checkpoint(straight / runs.CHECKPOINT)["model"]
    got = runs.load_checkpoint(resumed / runs.CHECKPOINT)["model"]
    for name, value in want.items():
        assert torch.equal(got[name], value), name


def _worker_pids(agent: subprocess.Popen) -> dict[int, int]:
    """rank -> pid of torchrun's worker processes (read from their environments)."""
    workers = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) != agent.pid:
                continue
            env = dict(
                kv.split("=", 1) for kv in (proc / "environ").read_text().split("\0") if "=" in kv
            )
        except (OSError, ValueError, IndexError):
            continue
        if "RANK" in env:
            workers[int(env["RANK"])] = int(proc.name)
    return workers


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds the workers through /proc")
def test_a_signal_to_one_process_stops_all_of_them_at_one_step(tmp_path, data_file):
    """SIGTERM reaches rank 1 only: both processes agree at the next check, save one
    checkpoint and exit as interrupted (none is left waiting in a collective), and the run
    resumes to its end."""
    out = tmp_path / "ddp"
    options = _options(data_file, out, epochs=400)
    agent = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={WORLD}", "-m", "pyro_vae", *options],
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (out / runs.CHECKPOINT).exists():  # training has begun
            assert agent.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(_worker_pids(agent)[1], signal.SIGTERM)
        _, err = agent.communicate(timeout=120)
    finally:  # the agent and its workers, whatever happened
        with contextlib.suppress(ProcessLookupError):
            os.killpg(agent.pid, signal.SIGKILL)
    assert err.count("pyro-vae: stopped by SIGTERM") == WORLD, err[-3000:]
    stopped = runs.load_checkpoint(out / runs.CHECKPOINT)["position"]
    assert 0 < stopped["step"] < 400 * 256 // (WORLD * BATCH)
    done = _torchrun(*_options(data_file, out, epochs=stopped["epoch"] + 2), "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert runs.load_checkpoint(out / runs.CHECKPOINT)["position"]["epoch"] == stopped["epoch"] + 2


def test_a_streamed_two_process_run_resumes_bit_for_bit(tmp_path, data_file):
    """Streamed from a memory-mapped .npy, each process reading its own slice of every global
    batch with a worker: stopped after one epoch and resumed, it ends where the unbroken run
    ends, bit for bit."""
    archive = np.load(data_file)
    npy = tmp_path / "digits.npy"
    np.save(npy, archive["train_x"])
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"

    def options(out, epochs: int) -> list[str]:
        args = _options(data_file, out, epochs=epochs)
        at = args.index("--dataset")
        del args[at : at + 4]  # (--dataset npz --data-dir FILE)
        return [*args, "--data", str(npy), "--stream", "always", "--workers", "1"]

    assert _torchrun(*options(straight, 2)).returncode == 0
    assert _torchrun(*options(resumed, 1)).returncode == 0
    recorded = json.loads((resumed / runs.CONFIG).read_text())["data_source"]
    assert recorded["read"] == "stream" and recorded["train"] == 230  # 256 rows, 10% held out
    done = _torchrun(*options(resumed, 2), "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    want = runs.load_checkpoint(straight / runs.CHECKPOINT)["model"]
    got = runs.load_checkpoint(resumed / runs.CHECKPOINT)["model"]
    for name, value in want.items():
        assert torch.equal(got[name], value), name
