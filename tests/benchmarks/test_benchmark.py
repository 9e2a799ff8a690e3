"""The benchmark's bookkeeping (not its timings): every path trains, the ratios are computed
against the right baselines, and a run on a busy machine is refused as contaminated."""

import json

import pytest
import torch

from benchmarks import compare, machine


@pytest.fixture(scope="module")
def bench_args():
    return [
        "--dataset", "mnist-sample", "--rounds", "2", "--hidden", "32",
        "--z-dim", "4", "--batch-size", "256",
        "--paths", "pyro-vae", "hand-written", "pyro-trace-elbo", "pyro-example",
    ]  # fmt: skip


def test_every_path_trains_and_ratios_use_their_baselines(tmp_path, bench_args):
    evaluation = ["--eval-images", "8", "--eval-paths", "hand-written", "pyro-vae-before"]
    evaluation.append("pyro-vae")
    code = compare.main(
        [*bench_args, "--max-other-load", "1.0", *evaluation, "--out", str(tmp_path)]
    )
    assert code == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())
    paths = report["paths"]
    assert list(paths) == ["pyro-vae", "hand-written", "pyro-trace-elbo", "pyro-example"]
    for p in paths.values():
        assert len(p["epoch_seconds"]) == 2 and p["clean_epochs"] == 2
        assert p["images_per_second"] == pytest.approx(4000 / p["median_epoch_seconds"])
    assert paths["hand-written"]["vs_hand_written"] == 1.0
    assert paths["pyro-trace-elbo"]["speedup_over_trace_elbo"] == 1.0
    fast, plain = paths["pyro-vae"], paths["pyro-trace-elbo"]
    assert fast["speedup_over_trace_elbo"] == pytest.approx(
        plain["median_epoch_seconds"] / fast["median_epoch_seconds"]
    )
    ev = report["log_likelihood_eval"]
    assert ev["images"] == 8 and ev["num_samples"] == 5000
    timed = ev["paths"]
    assert list(timed) == ["hand-written", "pyro-vae-before", "pyro-vae"]
    assert timed["hand-written"]["vs_hand_written"] == 1.0
    # the loop by hand and pyro-vae in the same chunks draw the same noise: the same estimate
    hand, ours = timed["hand-written"], timed["pyro-vae-before"]
    assert ours["mean_log_likelihood"] == pytest.approx(hand["mean_log_likelihood"], rel=1e-6)
    for t in timed.values():
        assert t["peak_memory_mb"] > 0
        assert t["ms_per_image"] == pytest.approx(1000 * t["seconds"] / 8)
        flops = 2 * (4 * 32 + 32 * 784) * 5000 * 8
        assert t["decoder_gflops"] == pytest.approx(flops / t["seconds"] / 1e9)
    md = (tmp_path / "benchmark.md").read_text()
    assert "| plain Pyro SVI(Trace_ELBO) |" in md and "K=5000, 8 test images" in md
    assert "| pyro-vae eager, cache-sized chunks |" in md
    assert "CONTAMINATED" not in md


def test_a_busy_machine_is_reported_as_contaminated(tmp_path, bench_args, monkeypatch):
    def busy(self, *exc):  # other processes used every CPU during each timed epoch
        self.other_cpu_share, self.loadavg = 1.0, float(self.cpus)

    monkeypatch.setattr(machine.LoadMonitor, "__exit__", busy)
    code = compare.main([*bench_args[:-4], "hand-written", "--out", str(tmp_path)])
    assert code == compare.EXIT_CONTAMINATED
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["clean"] is False and report["paths"]["hand-written"]["clean_epochs"] == 0
    assert "CONTAMINATED" in (tmp_path / "benchmark.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU machine")
def test_the_cuda_graph_path_is_refused_on_cpu(tmp_path, capsys):
    code = compare.main(["--device", "cpu", "--paths", "pyro-vae-cuda-graphs",
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 2 and "needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "benchmark.json").exists()


@pytest.mark.parametrize("mode", ["flush", "keep"])
def test_every_path_runs_in_the_runs_denormal_mode(mode):
    """The hand-written paths as much as pyro-vae's: a speed-up must not be the flush's."""
    from pyro_vae.training.denormals import flushing

    class Path:
        seen: list[bool] = []

        def epoch(self) -> None:
            self.seen.append(flushing())

    built = {"a": Path(), "b": Path()}
    compare._alternate(built, 2, torch.device("cpu"), mode == "flush", lambda line: None)
    assert Path.seen == [mode == "flush"] * 6
    assert not flushing()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--rounds", "0"], "argument --rounds: must be a finite number >= 1, got 0"),
        (["--max-other-load", "inf"], "--max-other-load: must be a finite number >= 0"),
    ],
)
def test_the_benchmarks_counts_are_checked_before_it_starts(args, needle, capsys):
    with pytest.raises(SystemExit) as stop:
        compare.main(args)
    assert stop.value.code == 2 and needle in capsys.readouterr().err
