"""torchrun with two CPU processes on Gloo equals one process on the combined batch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from pyro_vae import runs
from pyro_vae.training import TrainConfig, Trainer

WORLD, BATCH, SEED = 2, 16, 3


@pytest.fixture
def data_file(tmp_path, mnist_sample):
    path = tmp_path / "digits.npz"
    x = (mnist_sample.train_x[::15][:256] * 255).round().byte().reshape(-1, 28, 28).numpy()
    test = (mnist_sample.test_x[::50] * 255).round().byte().reshape(-1, 28, 28).numpy()
    np.savez(path, train_x=x, test_x=test)
    return path


def _options(data_file, out) -> list[str]:
    return [
        "train",
        "--dataset",
        "npz",
        "--data-dir",
        str(data_file),
        "--epochs",
        "1",
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
    t = Trainer(config)
    streams = []
    for rank in range(WORLD):
        torch.manual_seed(SEED + rank)
        streams.append(torch.get_rng_state())
    t.binarizer.set_state(t.pos.epoch_rng["binarize"])
    t.perm_generator.set_state(t.pos.epoch_rng["batches"])
    x_epoch = t.binarizer.train_x()
    perm = torch.randperm(t.n_train, generator=t.perm_generator)
    global_batch = WORLD * BATCH
    for step in range(t.n_train // global_batch):
        shards = x_epoch[perm[step * global_batch : (step + 1) * global_batch]].tensor_split(WORLD)
        t.optimizer.zero_grad(set_to_none=True)
        for rank, x in enumerate(shards):
            torch.set_rng_state(streams[rank])
            t.elbo.differentiable_loss(t.vae.model, t.vae.guide, x).backward()
            streams[rank] = torch.get_rng_state()
        t.optimizer.step()
    return t.vae.state_dict()


def test_two_gloo_processes_equal_one_process(tmp_path, data_file):
    out = tmp_path / "ddp"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={WORLD}",
            "-m",
            "pyro_vae.cli",
            *_options(data_file, out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = runs.load_checkpoint(out / runs.CHECKPOINT)
    assert summary["position"]["step"] == 256 // (WORLD * BATCH)  # 8 steps of 32 images
    assert (out / runs.SUMMARY).exists()
    distributed = summary["model"]
    single = _one_process_on_the_combined_batch(data_file, tmp_path / "single")
    for name, value in single.items():
        # stated tolerance 1e-6 relative; gradient sums in another order would need it
        torch.testing.assert_close(distributed[name], value, rtol=1e-6, atol=1e-7, msg=name)
