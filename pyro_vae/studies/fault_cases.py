"""The fault-injection cases: bad input (one clear line, exit 2, nothing started), faults during
training (a NaN loss, signals, a kill while a checkpoint is written) and determinism. Each
case runs the real command line and returns (what happened, as expected?)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .faults import (
    SMALL,
    Case,
    Workspace,
    checkpoint_position,
    cli,
    same_as_baseline,
    stop_mid_epoch,
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
from pyro_vae.model import likelihoods
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
        stopped, pos = stop_mid_epoch(out, ["--out", str(out), *SMALL], sig)
        expected_code = -9 if sig == signal.SIGKILL else 128 + int(sig)
        clean = sig == signal.SIGKILL or (
            f"stopped by {sig.name}" in stopped.stderr and "--resume" in stopped.stderr
        )
        saved = checkpoint_position(out)
        resumed = cli(["--out", str(out), "--resume", "--no-progress"])
        same, detail = same_as_baseline(ws, out)
        ok = stopped.code == expected_code and clean and resumed.code == 0 and same
        return (
            f"exit {stopped.code} at epoch {pos['epoch'] + 1} batch {pos['batch']}, "
            f"checkpoint at step {saved['step']}; resumed: {detail}"
        ), ok

    return run


_INJECT_KILL_IN_SAVE = """
import os, signal, torch
from pyro_vae.training import run_dir
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
run_dir.torch.save = save
"""


def _kill_during_checkpoint_write(ws: Workspace) -> tuple[str, bool]:
    out = ws.new_dir("kill-in-save")
    done = cli(["--out", str(out), *SMALL], inject=_INJECT_KILL_IN_SAVE)
    pos = checkpoint_position(out)  # the previous checkpoint, whole
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    resumed = cli(["--out", str(out), "--resume", "--no-progress"])
    same, detail = same_as_baseline(ws, out)
    ok = done.code == -9 and pos is not None and pos["step"] == 80 and resumed.code == 0 and same
    return (
        f"killed (exit {done.code}) writing checkpoint 9; checkpoint.pt loads at step "
        f"{pos and pos['step']} ({len(leftovers)} temp file left); resumed: {detail}"
    ), ok


def _determinism(ws: Workspace) -> tuple[str, bool]:
    out = ws.new_dir("second-run")
    assert cli(["--out", str(out), *SMALL]).code == 0
    same, detail = same_as_baseline(ws, out)
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
