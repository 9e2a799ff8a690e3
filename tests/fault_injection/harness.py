"""Running the real command line under faults: in a subprocess (or, where no fault is injected
inside the process, in this one), stopped mid-epoch by a signal, and compared bit for bit with
an unbroken run. The cases themselves are :mod:`cases`."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import pyro_vae
from pyro_vae.cli import main
from pyro_vae.training.checkpoint import load_checkpoint
from pyro_vae.training.run_dir import CHECKPOINT

# the directory that holds the pyro_vae package under test: subprocesses import the same code
PACKAGE_PARENT = Path(pyro_vae.__file__).resolve().parents[1]
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
        self._trained: Path | None = None
        self._n = 0

    def new_dir(self, label: str) -> Path:
        self._n += 1
        return self.root / f"{self._n:02d}-{label}"

    def trained(self) -> Path:
        """A finished one-epoch run that cases read (those that change it copy it first)."""
        if self._trained is None:
            self._trained = self.new_dir("trained")
            done = cli(["--out", str(self._trained), *SMALL, "--epochs", "1"])
            assert done.code == 0, done.stderr
        return self._trained

    def copy_of_trained(self, label: str) -> Path:
        out = self.new_dir(label)
        shutil.copytree(self.trained(), out)
        return out

    def baseline(self) -> Path:
        if self._baseline is None:
            self._baseline = self.new_dir("unbroken")
            done = cli(["--out", str(self._baseline), *SMALL])
            assert done.code == 0, done.stderr
        return self._baseline


def _env() -> dict[str, str]:
    """The subprocess's environment: this package first on the path, unbuffered output, and
    this process's torch thread count. Runs are compared bit for bit, and on some CPUs the
    matrix products' sums depend on how many threads share them (MKL on an AVX-512 Xeon)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PACKAGE_PARENT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return env


def _command(args: list[str], inject: str = "") -> list[str]:
    code = f"import sys\n{inject}\nfrom pyro_vae.cli import main\nsys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *args]


# Cases that need no fault injected inside the process may run the command line's main() in
# this process instead of a subprocess: the test suite turns this on (run_in_process), to save
# the start-up of each case; the table in docs/reliability.md runs every case in a subprocess.
IN_PROCESS = False


def run_in_process(on: bool) -> None:
    """Run the cases that inject nothing in this process (True) or each in a subprocess."""
    global IN_PROCESS
    IN_PROCESS = on


def _in_process(args: list[str]) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exit_:  # argparse
            code = int(exit_.code or 0)
    return Outcome(code, out.getvalue(), err.getvalue())


COMMANDS = ("train", "evaluate", "sample", "report", "--debug")


def cli(args: list[str], inject: str = "", timeout: float = 300) -> Outcome:
    """``pyro-vae ARGS`` in a subprocess (``train`` is implied unless a command leads)."""
    args = args if args[:1] and args[0] in COMMANDS else ["train", *args]
    if IN_PROCESS and not inject and args[:1] != ["--debug"]:
        return _in_process(args)
    done = subprocess.run(
        _command(args, inject),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def start(args: list[str]) -> subprocess.Popen:
    """``pyro-vae ARGS`` started in a subprocess and left running."""
    return subprocess.Popen(
        _command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )


def load(path: Path) -> dict:
    """A checkpoint's state, verified (a damaged one raises)."""
    return load_checkpoint(path)


def checkpoint_position(run_dir: Path) -> dict | None:
    try:
        return load(run_dir / CHECKPOINT)["position"]
    except Exception:  # not there yet, or being replaced this instant
        return None


def stop_mid_epoch(run_dir: Path, args: list[str], sig: signal.Signals) -> tuple[Outcome, dict]:
    """Start a run, freeze it once it has checkpointed mid-epoch, then deliver ``sig``."""
    proc = start(["train", *args])
    position = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        pos = checkpoint_position(run_dir)
        if pos and pos["batch"] > 0 and pos["epoch"] >= 1:
            proc.send_signal(signal.SIGSTOP)
            position = checkpoint_position(run_dir)  # the process is frozen: this is final
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


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative name -> bytes)."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def one_line_error(done: Outcome, needle: str, code: int = 2) -> bool:
    """Exit ``code`` with one line naming ``needle`` (besides a note that the lock of a killed
    process was taken over), no traceback."""
    lines = [ln for ln in done.stderr.strip().splitlines() if "took over the lock" not in ln]
    err = "\n".join(lines)
    return done.code == code and needle in err and "\n" not in err and "Traceback" not in err


def same_as_baseline(
    ws: Workspace, run_dir: Path, reference: Path | None = None
) -> tuple[bool, str]:
    """Final parameters bit for bit, and every metric but the timings, against the unbroken
    run (``reference``: another run of the same options)."""
    reference = reference or ws.baseline()
    a, b = load(reference / CHECKPOINT), load(run_dir / CHECKPOINT)
    same_params = a["model"].keys() == b["model"].keys() and all(
        torch.equal(a["model"][k], b["model"][k]) for k in a["model"]
    )
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in a["metrics"]]
    same_metrics = strip == [{k: v for k, v in r.items() if k not in TIMING} for r in b["metrics"]]
    csv_a = [ln.split(",")[:-2] for ln in (reference / "metrics.csv").read_text().splitlines()]
    csv_b = [ln.split(",")[:-2] for ln in (run_dir / "metrics.csv").read_text().splitlines()]
    ok = same_params and same_metrics and csv_a == csv_b
    return ok, (
        f"params {'identical' if same_params else 'DIFFER'}, metrics "
        f"{'identical' if same_metrics and csv_a == csv_b else 'DIFFER'}"
    )
