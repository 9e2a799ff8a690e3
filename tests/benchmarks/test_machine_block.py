"""Every benchmark says where it ran (never its timings): the CPU, its vector ISA, the BLAS and
the float32 matmul peak, measured before the timings, in its JSON, and the one-line description
in its printed summary or table. The measurements themselves are replaced by stand-ins."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch

from benchmarks import cli_startup, machine, progress_overhead, streaming, tracking


@pytest.fixture(autouse=True)
def _small_peak(monkeypatch) -> None:
    """The matmul peak on 64 x 64 matrices: these tests check bookkeeping, not the machine."""
    monkeypatch.setattr(machine, "PEAK_MATMUL_SIZE", 64)


@pytest.fixture
def order() -> list[str]:
    """The order in which the machine block and the timings were taken."""
    return []


def _recorded(calls: list[str], name: str, result: object) -> Callable[..., object]:
    def stand_in(*args: object, **kwargs: object) -> object:
        calls.append(name)
        return result

    return stand_in


def _block(monkeypatch, module: object, calls: list[str]) -> None:
    """``module``'s machine_block, recording when it is called."""

    def block(device: torch.device) -> dict:
        calls.append("machine")
        return machine.machine_block(device)

    monkeypatch.setattr(module, "machine_block", block)


def _check(where: dict) -> None:
    assert {"cpu", "vector_isa", "blas", "torch_threads"} <= set(where)
    assert where["vector_isa"] == torch.backends.cpu.get_cpu_capability()
    assert where["matmul_peak_gflops"] > 0 and where["matmul_peak"]["n"] == 64


def test_the_block_and_its_line():
    where = machine.machine_block(torch.device("cpu"))["machine"]
    _check(where)
    assert where["matmul_peak"]["repeats"] == 5 and 0 <= where["matmul_peak"]["other_cpu_share"]
    line = machine.machine_line(where | {"matmul_peak_gflops": 185.2, "onednn_matmul_gflops": 0})
    assert line == (
        f"{where['cpu']}, {where['vector_isa']}, BLAS {where['blas']}, "
        f"{where['torch_threads']} threads, matmul 185 GFLOP/s (float32 64x64 a @ b)"
    )
    both = machine.machine_line(where | {"matmul_peak_gflops": 185.2, "onednn_matmul_gflops": 417})
    assert "matmul 185 GFLOP/s (oneDNN 417) (float32" in both


def test_the_tracking_report(monkeypatch, tmp_path, capsys, order):
    store = {"per_epoch_share": 0.01, "paired_epoch_overhead": 0.0}
    measured = {"epoch_seconds": 1.0, "stores": {"import_mlflow_seconds": 0.5, "file": store}}
    monkeypatch.setattr(tracking, "measure", _recorded(order, "timings", measured))
    _block(monkeypatch, tracking, order)
    out = tmp_path / "tracking.json"
    assert tracking.main(["--out", str(out)]) == 0
    report = json.loads(out.read_text())
    _check(report["machine"])
    assert order == ["machine", "timings"]
    assert f"on {machine.machine_line(report['machine'])};" in capsys.readouterr().out


def test_the_progress_overhead_report(monkeypatch, tmp_path, capsys, order):
    times = {arm: [(1.0, 0.8), (1.1, 0.9)] for arm in ("off", "log", "bar")}
    measured = (times, {"log": 1e-6, "bar": 2e-6}, 10)
    monkeypatch.setattr(progress_overhead, "_measure", _recorded(order, "timings", measured))
    _block(monkeypatch, progress_overhead, order)
    out = tmp_path / "progress_overhead.json"
    assert progress_overhead.main(["--rounds", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    _check(report["machine"])
    assert order == ["machine", "timings"]
    assert f"machine: {machine.machine_line(report['machine'])}" in capsys.readouterr().out


def test_the_streaming_report(monkeypatch, tmp_path, capsys, order):
    measured = {"case": "memory", "met": {"streamed_to_resident": True}}
    monkeypatch.setattr(streaming, "measure_memory", _recorded(order, "timings", measured))
    _block(monkeypatch, streaming, order)
    out = tmp_path / "out"
    flags = ["--case", "memory", "--workdir", str(tmp_path / "work"), "--out", str(out)]
    assert streaming.main(flags) == 0
    report = json.loads((out / "streaming_memory.json").read_text())
    _check(report["machine"])
    assert order == ["machine", "timings"]
    assert f"machine: {machine.machine_line(report['machine'])}" in capsys.readouterr().out


def test_the_cli_startup_report(monkeypatch, tmp_path, capsys, order):
    seconds = {"median": 0.2, "min": 0.1, "max": 0.3, "all": [0.2]}
    measured = {
        "trees": {"this": {"path": "/x", "commit": "abc", "package": "/x/pyro_vae"}},
        "seconds": {"this": {case: seconds for case in cli_startup.CASES}},
        "loadavg_before": [0.5, 0.5, 0.5],
        "other_cpu_share": 0.0,
    }
    monkeypatch.setattr(cli_startup, "measure", _recorded(order, "timings", measured))
    block = machine.machine_block(torch.device("cpu"))
    monkeypatch.setattr(cli_startup, "_machine", _recorded(order, "machine", block))
    out = tmp_path / "cli_startup.json"
    assert cli_startup.main(["--rounds", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    _check(report["machine"])
    assert order == ["machine", "timings"]
    caption = f"medians of 1 runs on {machine.machine_line(report['machine'])}; load average"
    assert caption in capsys.readouterr().out


def test_cli_startup_measures_the_machine_in_a_child_process():
    where = cli_startup._machine()["machine"]
    assert {"cpu", "vector_isa", "blas"} <= set(where) and where["matmul_peak_gflops"] > 0
