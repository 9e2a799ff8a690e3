"""Fault-injection cases, training: a run in the way, a damaged or foreign checkpoint, a
NaN loss, signals and kills mid-epoch and mid-write, and determinism."""

from __future__ import annotations

import signal
from collections.abc import Callable

import torch

from .harness import (
    CHECKPOINT,
    SMALL,
    Case,
    Workspace,
    checkpoint_position,
    cli,
    load,
    same_as_baseline,
    stop_mid_epoch,
)


def _existing_run(ws: Workspace) -> tuple[str, bool]:
    out = ws.new_dir("existing")
    first = cli(["--out", str(out), *SMALL, "--epochs", "1"])
    before = (out / CHECKPOINT).read_bytes()
    again = cli(["--out", str(out), *SMALL, "--epochs", "1"])
    ok = (
        first.code == 0
        and again.code == 2
        and "--resume" in again.stderr
        and (out / CHECKPOINT).read_bytes() == before
    )
    return f"exit {again.code}: {again.stderr.strip()[:120]}; checkpoint untouched", ok


def _corrupt_checkpoint(ws: Workspace) -> tuple[str, bool]:
    out = ws.new_dir("corrupt")
    assert cli(["--out", str(out), *SMALL, "--epochs", "1"]).code == 0
    data = (out / CHECKPOINT).read_bytes()
    (out / CHECKPOINT).write_bytes(data[: len(data) // 2])  # torn in half
    done = cli(["--out", str(out), "--resume", "--no-progress"])
    err = done.stderr.strip()
    return f"exit {done.code}: {err[:140]}", done.code == 2 and "corrupt" in err and "\n" not in err


def _foreign_checkpoint(ws: Workspace) -> tuple[str, bool]:
    a, b = ws.new_dir("config-a"), ws.new_dir("config-b")
    assert cli(["--out", str(a), *SMALL, "--epochs", "1"]).code == 0
    assert cli(["--out", str(b), *SMALL, "--epochs", "1", "--z-dim", "6"]).code == 0
    (b / CHECKPOINT).write_bytes((a / CHECKPOINT).read_bytes())
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
    state = load(out / CHECKPOINT)
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
import os, signal
from pyro_vae.training import checkpoint
from pyro_vae.training.atomic_files import atomic_write
saves = [0]
real_write = checkpoint.write_bytes
def write_bytes(path, data):
    saves[0] += 1
    if saves[0] == 9:  # the 9th checkpoint: write half of it, then die
        def half(f):
            f.write(data[: len(data) // 2]); f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write(path, half)
    return real_write(path, data)
checkpoint.write_bytes = write_bytes
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
        f"killed (exit {done.code}) writing checkpoint 9; {CHECKPOINT} loads at step "
        f"{pos and pos['step']} ({len(leftovers)} temp file left); resumed: {detail}"
    ), ok


def _determinism(ws: Workspace) -> tuple[str, bool]:
    out = ws.new_dir("second-run")
    assert cli(["--out", str(out), *SMALL]).code == 0
    same, detail = same_as_baseline(ws, out)
    return f"second run with the same seed: {detail}", same


TRAINING_CASES = [
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
