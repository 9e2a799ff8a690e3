"""The AIS benchmark's bookkeeping: every path runs on the same model and images, the
project's paths give the same chains (the same estimate), ratios use the hand-written loop,
and the JSON names the machine. Its timings are not checked."""

from __future__ import annotations

import json

import pytest

from benchmarks import ais_speed


@pytest.mark.usefixtures("one_thread")
def test_the_benchmark_times_each_path_against_the_hand_written_loop(tmp_path):
    out = tmp_path / "ais.json"
    paths = ["hand-written", "pyro-vae-pyro", "pyro-vae-graph"]
    argv = ["--steps", "4", "--images", "3", "--epochs", "1", "--rounds", "2", "--out", str(out)]
    assert ais_speed.main([*argv, "--paths", *paths]) == 0
    result = json.loads(out.read_text())
    assert {"cpu", "vector_isa", "blas", "matmul_peak_gflops"} <= set(result["machine"])
    ran = result["paths"]
    assert list(ran) == paths
    assert ran["hand-written"]["vs_hand_written"] == 1.0
    assert all(len(r["rounds_seconds"]) == 2 and r["seconds"] > 0 for r in ran.values())
    ours = {ran[p]["mean_log_likelihood"] for p in paths[1:]}
    assert len(ours) == 1 or max(ours) - min(ours) < 1e-3
    assert "time vs hand-written" in out.with_suffix(".md").read_text()
