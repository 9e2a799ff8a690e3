"""The streaming benchmark's bookkeeping at a tiny size (never its timings): the data are made
and reused, each run is a child process whose memory was sampled with its DataLoader workers,
and the reports hold finite, positive numbers, targets and verdicts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks import streaming

pytestmark = pytest.mark.slow  # four training processes


def _positive(value: float) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


def _check_memory_sampled(memory: dict, workers: int) -> None:
    assert memory["samples"] > 0
    whole = memory["whole_run"]
    assert _positive(whole["rss_anon_sum_peak_gb"]) and _positive(whole["pss_anon_sum_peak_gb"])
    assert _positive(memory["trainer_rss_anon_peak_gb"])
    if workers:  # the trainer and its workers, each seen
        assert memory["processes_seen"] > 1 and memory["most_processes_at_once"] > 1
        assert all(_positive(p) for p in memory["other_processes_rss_anon_peak_gb"])
        # (each is read at its own instant: a process growing between the two reads of a
        # sample may put PSS a little above; shared pages can only put it below)
        assert whole["pss_anon_sum_peak_gb"] <= 1.02 * whole["rss_anon_sum_peak_gb"]


@pytest.fixture(autouse=True)
def _one_thread_each(monkeypatch):
    """The training processes use one thread: on a busy machine two threads each spin waiting
    for the other, and a tiny run takes minutes."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _run(tmp_path, *flags: str) -> None:
    common = ["--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    assert streaming.main([*common, "--sample-every", "0.05", *flags]) == 0


def test_the_memory_case_reports_both_runs_and_their_ratio(tmp_path):
    _run(tmp_path, "--case", "memory", "--rows", "20000", "--resident-rows", "5000")
    report = json.loads((tmp_path / "out" / "streaming_memory.json").read_text())
    assert {"cpu", "vector_isa", "blas", "torch_threads", "torch"} <= set(report["machine"])
    assert report["command"].startswith("python -m benchmarks.streaming --workdir")
    assert report["sizes"]["rows"] == 20000 and report["sizes"]["resident_rows"] == 5000
    # the slice held on the device is the first rows of the streamed file
    work = tmp_path / "work"
    big, small = np.load(work / "rows_20000_seed0.npy"), np.load(work / "rows_5000_seed0.npy")
    assert big.shape == (20000, 784) and big.dtype == np.uint8
    np.testing.assert_array_equal(small, big[:5000])
    streamed, resident = report["streamed"], report["resident"]
    assert streamed["data"]["read"] == "stream" and streamed["data"]["workers"] == 2
    assert resident["data"] == {"read": "device"}
    assert streamed["num_train"] + streamed["num_test"] == 20000
    assert streamed["num_test"] == 200  # --test-fraction 0.01
    for run in (streamed, resident):
        assert _positive(run["images_per_second"]) and run["clock"]["steps"] > 0
    _check_memory_sampled(streamed["memory"], workers=2)
    _check_memory_sampled(resident["memory"], workers=0)
    assert report["streamed_to_resident"] == pytest.approx(
        streamed["images_per_second"] / resident["images_per_second"]
    )
    assert set(report["targets"]) == {
        "rss_anon_sum_peak_gb_at_most",
        "streamed_to_resident_at_least",
    }
    assert set(report["met"]) == {"rss_anon_sum_peak_gb", "streamed_to_resident"}
    assert all(isinstance(v, bool) for v in report["met"].values())
    assert "counts a page shared by several of them" in report["notes"]["memory"]


def test_the_images_case_stops_after_the_steps_and_reports_the_wait(tmp_path):
    flags = ["--case", "images", "--images", "200", "--steps", "5", "--warmup-steps", "2"]
    _run(tmp_path, *flags, "--batch-size", "16")
    report = json.loads((tmp_path / "out" / "streaming_images.json").read_text())
    folder = tmp_path / "work" / "png_200_seed0"
    assert len(list(folder.glob("*.png"))) == 200
    images = np.load(tmp_path / "work" / "images_200_seed0.npy")
    assert images.shape == (200, 3, 64, 64) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[7], streaming.smooth_image(7, 0).transpose(2, 0, 1))
    assert _positive(report["sizes"]["png_gb"]) and _positive(report["sizes"]["npy_gb"])
    for name in ("png", "npy"):
        run = report[name]
        assert run["summary"] is None  # stopped by the step limit, before the epoch's end
        assert run["clock"]["steps"] == 5 and run["clock"]["warmup_steps"] == 2
        assert _positive(run["images_per_second"])
        assert _positive(run["images_per_second_after_warmup"])
        for share in ("data_wait_share", "data_wait_share_after_warmup"):
            assert 0 <= run[share] <= 1
        _check_memory_sampled(run["memory"], workers=2)
    assert report["targets"] == {"data_wait_share_below": 0.1}
    assert set(report["met"]) == {"png_data_wait_share", "npy_data_wait_share"}
    # made once: a second look reuses the files as they are
    stamp = (folder / "0000000.png").stat().st_mtime_ns
    streaming.image_data(tmp_path / "work", 200, 0)
    assert (folder / "0000000.png").stat().st_mtime_ns == stamp
