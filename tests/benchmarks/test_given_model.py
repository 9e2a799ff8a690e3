"""The given-model benchmark's bookkeeping (never its timings): both arms train the same VAE
by the same step, and the report pairs their epochs and names the machine."""

from __future__ import annotations

import json
import math

import torch

from benchmarks import given_model, machine


def test_both_arms_build_the_same_vae_and_the_same_step():
    trainers = given_model._trainers(compile=False, seed=0)
    named, given = trainers["named"], trainers["given"]
    assert type(named.vae) is type(given.vae)
    assert type(named.parts.step_estimator) is type(given.parts.step_estimator)
    shapes = [p.shape for p in named.vae.parameters()]
    assert shapes == [p.shape for p in given.vae.parameters()]
    assert given.config.model == "given" and named.config.model == "vae"
    # the same seed draws the same initial weights: the arms differ only in how they were made
    for a, b in zip(named.vae.parameters(), given.vae.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_the_report_pairs_the_rounds_and_names_the_machine(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(machine, "PEAK_MATMUL_SIZE", 64)  # bookkeeping, not the machine
    out = tmp_path / "given_model.json"
    assert given_model.main(["--rounds", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    seconds = result["all_epoch_seconds"]
    assert len(seconds["named"]) == len(seconds["given"]) == 2
    ratios = [g / n for g, n in zip(seconds["given"], seconds["named"], strict=True)]
    assert result["ratio_spread"] == [min(ratios), max(ratios)]
    assert math.isfinite(result["ratio_given_to_named"])
    where = result["machine"]
    assert {"cpu", "vector_isa", "blas"} <= set(where) and where["matmul_peak_gflops"] > 0
    assert where["matmul_peak"]["n"] == 64
    assert f"on {machine.machine_line(where)};" in capsys.readouterr().out
