"""The step compiled by itself for a long run (``compile_from``): when it is, when it is not,
and a step that cannot be recorded going on eagerly from the same noise."""

from __future__ import annotations

import pytest
import torch
from support import tiny_config

from pyro_vae import build_vae
from pyro_vae.inference.graph_compiler import CaptureError
from pyro_vae.training import TrainConfig
from pyro_vae.training.assemble import compiles
from pyro_vae.training.compiled import CompiledStep
from pyro_vae.training.run import fit

VAE = build_vae((1, 28, 28), hidden=[8], z_dim=2)


@pytest.mark.parametrize(
    "options, steps, expected",
    [
        ({}, 3_600, False),  # the default run: 100 epochs of 36 steps stays eager
        ({}, 10_000, True),
        ({"compile_from": 0}, 10**6, False),
        ({"compile_from": 50}, 50, True),
        ({"compile": True}, 1, True),
        ({"precision": "bf16"}, 10**6, False),  # --compile would be refused: eager
        ({"model": "m2", "discrete": "enumerate"}, 10**6, False),
    ],
)
def test_a_run_compiles_by_itself_from_compile_from_steps(options, steps, expected):
    assert compiles(TrainConfig(**options), VAE, steps) is expected


def test_a_step_that_cannot_be_recorded_runs_eagerly_as_an_eager_run(
    tmp_path, small_data, monkeypatch
):
    """Recording draws nothing from the random streams, so the run that falls back trains
    to the eager run's parameters bit for bit; with --compile the error stands."""
    eager = fit(tiny_config(tmp_path / "eager", tensorboard=False), small_data)

    def refuse(self, x, beta):
        raise CaptureError("it reads tensor values while it runs")

    monkeypatch.setattr(CompiledStep, "__call__", refuse)
    auto = tiny_config(tmp_path / "auto", tensorboard=False, compile_from=1)
    with pytest.warns(UserWarning, match="the step runs uncompiled"):
        fell_back = fit(auto, small_data)
    assert fell_back.summary["compiled"] is False
    for a, b in zip(eager.vae.parameters(), fell_back.vae.parameters(), strict=True):
        assert torch.equal(a, b)
    forced = tiny_config(tmp_path / "forced", tensorboard=False, compile=True)
    with pytest.raises(CaptureError):
        fit(forced, small_data)
