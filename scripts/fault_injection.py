"""Fault injection, end to end: bad input, faults during training, kills and resumes.

Every case runs the real ``pyro-vae train`` command line in a subprocess (faults that need a
hand inside the process are injected by a short wrapper that patches one function, then calls
the same entry point) and compares what happened with what should. Prints a table
(case | expected | got | ok) and writes it as JSON; exits 1 if any case fails.

    python scripts/fault_injection.py [--out runs/fault_injection] [--only SUBSTRING]

``tests/test_fault_injection.py`` runs each case as its own test.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
# A small, quick configuration: 125 steps per epoch on the 4,000-image sample.
SMALL = [
    "--hidden",
    "64",
    "--z-dim",
    "4",
    "--batch-size",
    "32",
    "--epochs",
    "2",
    "--checkpoint-every",
    "10",
    "--no-progress",
]
TIMING = {"train_seconds", "eval_seconds"}


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


@dataclass
class Case:
    name: str
    expected: str
    run: Callable[[Workspace], tuple[str, bool]]  # -> (what happened, as expected?)


class Workspace:
    """A scratch directory, plus one unbroken run that resumed runs are compared against."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._baseline: Path | None = None
        self._n = 0

    def new_dir(self, label: str) -> Path:
        self._n += 1
        return self.root / f"{self._n:02d}-{label}"

    def baseline(self) -> Path:
        if self._baseline is None:
            self._baseline = self.new_dir("unbroken")
            done = cli(["--out", str(self._baseline), *SMALL])
            assert done.code == 0, done.stderr
        return self._baseline


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _command(args: list[str], inject: str = "") -> list[str]:
    code = f"import sys\n{inject}\nfrom pyro_vae.cli import main\nsys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *args]


# Cases that need no fault injected inside the process may run pyro_vae.cli.main in this
# process instead of a subprocess (the test suite does, to save the start-up of each one).
IN_PROCESS = False


def _in_process(args: list[str]) -> Outcome:
    import contextlib
    import io

    from pyro_vae.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exit_:  # argparse
            code = int(exit_.code or 0)
    return Outcome(code, out.getvalue(), err.getvalue())


def cli(args: list[str], inject: str = "", timeout: float = 300) -> Outcome:
    """``pyro-vae ARGS`` in a subprocess (``train`` is implied unless --debug leads)."""
    args = args if args[:1] == ["--debug"] else ["train", *args]
    if IN_PROCESS and not inject and args[:1] != ["--debug"]:
        return _in_process(args)
    done = subprocess.run(
        _command(args, inject),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=ROOT,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def _checkpoint_position(run_dir: Path) -> dict | None:
    try:
        state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
        return state["position"]
    except Exception:  # not there yet, or being replaced this instant
        return None


def _stop_mid_epoch(run_dir: Path, args: list[str], sig: signal.Signals) -> tuple[Outcome, dict]:
    """Start a run, freeze it once it has checkpointed mid-epoch, then deliver ``sig``."""
    proc = subprocess.Popen(
        _command(["train", *args]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    position = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        pos = _checkpoint_position(run_dir)
        if pos and pos["batch"] > 0 and pos["epoch"] >= 1:
            proc.send_signal(signal.SIGSTOP)
            position = _checkpoint_position(run_dir)  # the process is frozen: this is final
            if position and position["batch"] > 0:
                break
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.005)
    if position is None:
        proc.kill()
        raise RuntimeError(f"the run ended before it could be stopped mid-epoch: {proc.stderr}")
    proc.send_signal(sig)
    if sig != signal.SIGKILL:
        proc.send_signal(signal.SIGCONT)
    stdout, stderr = proc.communicate(timeout=120)
    return Outcome(proc.returncode, stdout, stderr), position


def _same_as_baseline(ws: Workspace, run_dir: Path) -> tuple[bool, str]:
    """Final parameters bit for bit, and every metric but the timings."""
    a = torch.load(ws.baseline() / "checkpoint.pt", map_location="cpu", weights_only=False)
    b = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    same_params = a["model"].keys() == b["model"].keys() and all(
        torch.equal(a["model"][k], b["model"][k]) for k in a["model"]
    )
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in a["metrics"]]
    same_metrics = strip == [{k: v for k, v in r.items() if k not in TIMING} for r in b["metrics"]]
    csv_a = [ln.split(",")[:-2] for ln in (ws.baseline() / "metrics.csv").read_text().splitlines()]
    csv_b = [ln.split(",")[:-2] for ln in (run_dir / "metrics.csv").read_text().splitlines()]
    ok = same_params and same_metrics and csv_a == csv_b
    return ok, (
        f"params {'identical' if same_params else 'DIFFER'}, metrics "
        f"{'identical' if same_metrics and csv_a == csv_b else 'DIFFER'}"
    )


# --- bad input: one clear line, exit 2, no traceback, nothing started ------------------------


def bad_input(
    label: str, args: list[str], needle: str, prepare: Callable[[Path], list[str]] | None = None
) -> Case:
    def run(ws: Workspace) -> tuple[str, bool]:
        out = ws.new_dir(label)
        extra = prepare(out.parent / f"{out.name}-input") if prepare else []
        done = cli([*args, *extra, "--out", str(out), "--no-progress"])
        err = done.stderr.strip()
        ok = (
            done.code == 2
            and needle in err
            and "\n" not in err
            and "Traceback" not in err
            and not out.exists()
        )
        return f"exit {done.code}: {err[:160]}", ok

    return Case(label, f"exit 2, one line naming '{needle}', no run directory", run)


def _npz(**arrays: np.ndarray) -> Callable[[Path], list[str]]:
    def prepare(base: Path) -> list[str]:
        base.mkdir(parents=True, exist_ok=True)
        path = base / "data.npz"
        np.savez(path, **arrays)
        return ["--dataset", "npz", "--data-dir", str(path)]

    return prepare


def _garbage_idx(base: Path) -> list[str]:
    base.mkdir(parents=True, exist_ok=True)
    for stem in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]:
        (base / stem).write_bytes(b"\x00\x00\x08\x03garbage")
    return ["--dataset", "mnist", "--data-dir", str(base)]


_grey = np.random.default_rng(0).random((64, 28, 28)).astype(np.float32)
_nan = _grey.copy()
_nan[3, 10, 10] = np.nan

BAD_INPUT = [
    bad_input("unknown-dataset", ["--dataset", "cifar"], "choose one of: mnist-sample"),
    bad_input("unknown-likelihood", ["--likelihood", "bernouli"], "continuous-bernoulli"),
    bad_input("unknown-prior", ["--prior", "gauss"], "normal, learned-normal, mixture"),
    bad_input("unknown-estimator", ["--estimator", "iwa"], "trace, mean-field"),
    bad_input("unknown-network", ["--network", "resnet"], "mlp, conv"),
    bad_input("grey-levels-to-bernoulli", ["--binarize", "none"], "--binarize dynamic|static"),
    bad_input(
        "nan-in-data",
        ["--likelihood", "gaussian", "--binarize", "none"],
        "NaN",
        _npz(train_x=_nan, test_x=_grey[:8]),
    ),
    bad_input(
        "wrong-shape-for-conv",
        ["--network", "conv"],
        "28x28",
        _npz(train_x=np.zeros((8, 32, 32), np.uint8), test_x=np.zeros((4, 32, 32), np.uint8)),
    ),
    bad_input(
        "missing-data-dir",
        ["--dataset", "mnist", "--data-dir", "/nonexistent/mnist"],
        "does not exist",
    ),
    bad_input("unreadable-data-dir", [], "cannot read", _garbage_idx),
    bad_input("beta-negative", ["--beta", "-0.5"], "--beta must be >= 0"),
    bad_input("particles-zero", ["--particles", "0"], "--particles must be >= 1"),
    bad_input("lr-zero", ["--lr", "0"], "--lr must be > 0"),
    bad_input("z-dim-zero", ["--z-dim", "0"], "--z-dim must be >= 1"),
    bad_input("batch-size-zero", ["--batch-size", "0"], "--batch-size must be >= 1"),
]
if not torch.cuda.is_available():
    BAD_INPUT.append(bad_input("cuda-without-gpu", ["--device", "cuda"], "no CUDA GPU"))


def _debug_traceback(ws: Workspace) -> tuple[str, bool]:
    done = cli(["--debug", "train", "--beta", "-1", "--out", str(ws.new_dir("debug"))])
    ok = done.code != 0 and "Traceback" in done.stderr and "ConfigError" in done.stderr
    return f"exit {done.code}, traceback {'shown' if 'Traceback' in done.stderr else 'absent'}", ok


def _existing_run(ws: Workspace) -> tuple[str, bool]:
    out = ws.new_dir("existing")
    first = cli(["--out", str(out), *SMALL, "--epochs", "1"])
    before = (out / "checkpoint.pt").read_bytes()
    again = cli(["--out", str(out), *SMALL, "--epochs", "1"])
    ok = (
        first.code == 0
        and again.code == 2
        and "--resume" in again.stderr
        and (out / "checkpoint.pt").read_bytes() == before
    )
    return f"exit {again.code}: {again.stderr.strip()[:120]}; checkpoint untouched", ok


def _corrupt_checkpoint(ws: Workspace) -> tuple[str, bool]:
    out = ws.new_dir("corrupt")
    assert cli(["--out", str(out), *SMALL, "--epochs", "1"]).code == 0
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])  # torn in half
    done = cli(["--out", str(out), "--resume", "--no-progress"])
    err = done.stderr.strip()
    return f"exit {done.code}: {err[:140]}", done.code == 2 and "corrupt" in err and "\n" not in err


def _foreign_checkpoint(ws: Workspace) -> tuple[str, bool]:
    a, b = ws.new_dir("config-a"), ws.new_dir("config-b")
    assert cli(["--out", str(a), *SMALL, "--epochs", "1"]).code == 0
    assert cli(["--out", str(b), *SMALL, "--epochs", "1", "--z-dim", "6"]).code == 0
    (b / "checkpoint.pt").write_bytes((a / "checkpoint.pt").read_bytes())
    done = cli(["--out", str(b), "--resume", "--epochs", "2", "--no-progress"])
    err = done.stderr.strip()
    ok = done.code == 2 and "another config" in err and "z_dim" in err
    return f"exit {done.code}: {err[:140]}", ok


def _changed_option_on_resume(ws: Workspace) -> tuple[str, bool]:
    out = ws.new_dir("resume-changed")
    assert cli(["--out", str(out), *SMALL, "--epochs", "1"]).code == 0
    done = cli(["--out", str(out), "--resume", "--lr", "0.01", "--no-progress"])
    err = done.stderr.strip()
    return f"exit {done.code}: {err[:140]}", done.code == 2 and "--lr" in err


# --- faults during training --------------------------------------------------------------------

NAN_AT_STEP = 57
_INJECT_NAN = f"""
from pyro_vae import likelihoods
calls = [0]
original = likelihoods.Bernoulli.forward
def forward(self, out, x=None):
    calls[0] += 1  # call 1 is the first-batch reference check, call k + 1 is step k
    return original(self, out * float("nan") if calls[0] > {NAN_AT_STEP} else out, x)
likelihoods.Bernoulli.forward = forward
"""


def _non_finite_loss(ws: Workspace) -> tuple[str, bool]:
    out = ws.new_dir("nan-loss")
    done = cli(["--out", str(out), *SMALL], inject=_INJECT_NAN)
    err = done.stderr.strip()
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    kept_good = all(torch.isfinite(v).all() for v in state["model"].values())
    step = state["position"]["step"]
    ok = (
        done.code == 3
        and f"at step {NAN_AT_STEP}" in err
        and "likely cause" in err
        and kept_good
        and step == 50
        and "\n" not in err
    )
    return f"exit {done.code}: {err[:110]}...; checkpoint at step {step}, finite={kept_good}", ok


def _signal_then_resume(sig: signal.Signals) -> Callable[[Workspace], tuple[str, bool]]:
    def run(ws: Workspace) -> tuple[str, bool]:
        out = ws.new_dir(f"{sig.name.lower()}-resume")
        stopped, pos = _stop_mid_epoch(out, ["--out", str(out), *SMALL], sig)
        expected_code = -9 if sig == signal.SIGKILL else 128 + int(sig)
        clean = sig == signal.SIGKILL or (
            f"stopped by {sig.name}" in stopped.stderr and "--resume" in stopped.stderr
        )
        saved = _checkpoint_position(out)
        resumed = cli(["--out", str(out), "--resume", "--no-progress"])
        same, detail = _same_as_baseline(ws, out)
        ok = stopped.code == expected_code and clean and resumed.code == 0 and same
        return (
            f"exit {stopped.code} at epoch {pos['epoch'] + 1} batch {pos['batch']}, "
            f"checkpoint at step {saved['step']}; resumed: {detail}"
        ), ok

    return run


_INJECT_KILL_IN_SAVE = """
import os, signal, torch
from pyro_vae import runs
saves = [0]
real_save = torch.save
def save(obj, f, *a, **k):
    saves[0] += 1
    if saves[0] == 9:  # the 9th checkpoint: write half of it, then die
        import io
        buf = io.BytesIO(); real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2]); f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *a, **k)
runs.torch.save = save
"""


def _kill_during_checkpoint_write(ws: Workspace) -> tuple[str, bool]:
    out = ws.new_dir("kill-in-save")
    done = cli(["--out", str(out), *SMALL], inject=_INJECT_KILL_IN_SAVE)
    pos = _checkpoint_position(out)  # the previous checkpoint, whole
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    resumed = cli(["--out", str(out), "--resume", "--no-progress"])
    same, detail = _same_as_baseline(ws, out)
    ok = done.code == -9 and pos is not None and pos["step"] == 80 and resumed.code == 0 and same
    return (
        f"killed (exit {done.code}) writing checkpoint 9; checkpoint.pt loads at step "
        f"{pos and pos['step']} ({len(leftovers)} temp file left); resumed: {detail}"
    ), ok


def _determinism(ws: Workspace) -> tuple[str, bool]:
    out = ws.new_dir("second-run")
    assert cli(["--out", str(out), *SMALL]).code == 0
    same, detail = _same_as_baseline(ws, out)
    return f"second run with the same seed: {detail}", same


CASES = [
    *BAD_INPUT,
    Case("debug-shows-traceback", "--debug: a traceback instead of one line", _debug_traceback),
    Case(
        "existing-run-not-clobbered",
        "exit 2 naming --resume; old checkpoint unchanged",
        _existing_run,
    ),
    Case("corrupt-checkpoint", "exit 2, 'corrupt', one line", _corrupt_checkpoint),
    Case(
        "checkpoint-from-other-config", "exit 2, 'another config' naming z_dim", _foreign_checkpoint
    ),
    Case("option-changed-on-resume", "exit 2 naming --lr", _changed_option_on_resume),
    Case(
        "non-finite-loss",
        f"exit 3 'at step {NAN_AT_STEP}' + cause; last good checkpoint (step 50) kept",
        _non_finite_loss,
    ),
    Case(
        "sigint-then-resume",
        "exit 130, checkpoint saved; resume = unbroken run",
        _signal_then_resume(signal.SIGINT),
    ),
    Case(
        "sigterm-then-resume",
        "exit 143, checkpoint saved; resume = unbroken run",
        _signal_then_resume(signal.SIGTERM),
    ),
    Case(
        "sigkill-mid-epoch-then-resume",
        "resume from last checkpoint = unbroken run, bit for bit",
        _signal_then_resume(signal.SIGKILL),
    ),
    Case(
        "kill-during-checkpoint-write",
        "previous checkpoint intact; resume = unbroken run",
        _kill_during_checkpoint_write,
    ),
    Case("determinism", "same seed, same config: identical parameters and metrics", _determinism),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="where to write fault_injection.json")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pyro-vae-faults-") as scratch:
        ws = Workspace(Path(scratch))
        for case in CASES:
            if args.only not in case.name:
                continue
            t0 = time.perf_counter()
            try:
                got, ok = case.run(ws)
            except Exception as err:  # a case that breaks is a failed case, not a crash
                got, ok = f"{type(err).__name__}: {err}", False
            rows.append(
                {
                    "case": case.name,
                    "expected": case.expected,
                    "got": got,
                    "ok": ok,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            print(f"{'ok  ' if ok else 'FAIL'} {case.name}: {got}", flush=True)
    print("\n| case | expected | got | ok |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['expected']} | {r['got']} | {'yes' if r['ok'] else 'NO'} |")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "fault_injection.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
