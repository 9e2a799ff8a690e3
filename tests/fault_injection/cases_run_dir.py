"""Fault-injection cases, the run directory's contract: one writer at a time, nothing lost
(``--overwrite`` checks first, other files are refused), nothing stale, nothing half-written
(kills and SIGTERM while any command writes), a corrupt checkpoint named and the one before it
offered, nothing executed (a checkpoint built to run code, a report page fed hostile text)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from pyro_vae.training.run_dir import LEGACY_CHECKPOINT, PREVIOUS_CHECKPOINT
from pyro_vae.training.run_lock import LOCK_NAME, RunLock

from .harness import (
    CHECKPOINT,
    SMALL,
    Case,
    Workspace,
    cli,
    load,
    one_line_error,
    same_as_baseline,
    snapshot,
    start,
)

ARTIFACTS = ("evaluation.json", "report.html", "samples.png", "samples.pt")
QUICK_EVALUATE = ["--num-samples", "2", "--max-images", "20", "--no-progress"]


def _hidden(out: Path) -> list[str]:
    """What a command left hidden in ``out`` (temporaries, staged figures), the lock aside."""
    return [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != LOCK_NAME]


def _visible(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` but those under hidden names."""
    return {k: v for k, v in snapshot(out).items() if not k.split("/")[0].startswith(".")}


# --- nothing lost --------------------------------------------------------------------------------


def _overwrite_refused(label: str, args: list[str], needle: str) -> Case:
    def run(ws: Workspace) -> tuple[str, bool]:
        out = ws.copy_of_trained(label)
        before = snapshot(out)
        done = cli(["--out", str(out), "--overwrite", *SMALL, *args])
        kept = snapshot(out) == before
        ok = one_line_error(done, needle) and kept
        return f"exit {done.code}: {done.stderr.strip()[:110]}; every file kept: {kept}", ok

    return Case(label, f"exit 2 naming '{needle}'; the old run byte for byte as it was", run)


def _foreign_folder(ws: Workspace) -> tuple[str, bool]:
    out = ws.new_dir("foreign-folder")
    out.mkdir()
    (out / "config.json").write_text('{"their": "experiment"}')
    (out / "notes.txt").write_text("someone else's notes")
    before = snapshot(out)
    done = cli(["--out", str(out), *SMALL, "--epochs", "1"])
    kept = snapshot(out) == before
    ok = one_line_error(done, "did not write") and kept
    return f"exit {done.code}: {done.stderr.strip()[:120]}; files kept: {kept}", ok


def _overwrite_removes_everything(ws: Workspace) -> tuple[str, bool]:
    out = ws.copy_of_trained("overwrite-all")
    steps = [
        cli(["evaluate", str(out), *QUICK_EVALUATE]),
        cli(["report", str(out)]),
        cli(["sample", str(out), "--num", "4"]),
    ]
    (out / "notes.txt").write_text("mine")
    had = [name for name in ARTIFACTS if (out / name).exists()]
    done = cli(["--out", str(out), "--overwrite", *SMALL, "--epochs", "1", "--seed", "1"])
    left = [name for name in ARTIFACTS if (out / name).exists()]
    ok = (
        all(s.code == 0 for s in steps)
        and len(had) == len(ARTIFACTS)
        and done.code == 0
        and not left
        and (out / "notes.txt").read_text() == "mine"
        and load(out / CHECKPOINT)["config"]["seed"] == 1
    )
    return f"before: {had}; after --overwrite: {left or 'none of them'}, notes.txt kept", ok


def _resume_removes_stale(ws: Workspace) -> tuple[str, bool]:
    out = ws.copy_of_trained("resume-stale")
    evaluated = cli(["evaluate", str(out), *QUICK_EVALUATE])
    done = cli(["--out", str(out), "--resume", "--epochs", "2", "--no-progress"])
    ok = evaluated.code == 0 and done.code == 0 and not (out / "evaluation.json").exists()
    return (
        f"evaluation.json of epoch 1 after resuming to epoch 2: {'kept' if not ok else 'removed'}",
        ok,
    )


# --- one writer ----------------------------------------------------------------------------------


def _second_writer(ws: Workspace) -> tuple[str, bool]:
    out = ws.copy_of_trained("held")
    before = snapshot(out)
    with RunLock(out, "train"):
        done = [
            cli(["--out", str(out), "--resume", "--epochs", "2", "--no-progress"]),
            cli(["evaluate", str(out), *QUICK_EVALUATE]),
            cli(["report", str(out)]),
        ]
    needle = f"in use by another pyro-vae process (pid {os.getpid()}"
    ok = all(one_line_error(d, needle) for d in done) and snapshot(out) == before
    return f"train, evaluate, report: exit {[d.code for d in done]}: {done[0].stderr[:110]}", ok


# what RunLock.acquire does, in a process that need not import torch to do it
_HOLD_LOCK = f"""
import fcntl, json, os, sys, time
fd = os.open(os.path.join(sys.argv[1], "{LOCK_NAME}"), os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, json.dumps({{"pid": os.getpid(), "command": "train", "since": "now"}}).encode())
print("held", flush=True)
time.sleep(600)
"""


def _stale_lock(ws: Workspace) -> tuple[str, bool]:
    out = ws.new_dir("stale-lock")
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    done = cli(["--out", str(out), *SMALL, "--epochs", "1"])
    ok = (
        done.code == 0 and f"pid {holder.pid}" in done.stderr and "no longer running" in done.stderr
    )
    return f"holder killed; next train: exit {done.code}, {done.stderr.strip()[:100]}", ok


def _concurrent(n: int) -> Callable[[Workspace], tuple[str, bool]]:
    def run(ws: Workspace) -> tuple[str, bool]:
        out = ws.new_dir(f"{n}-writers")
        procs = [start(["train", "--out", str(out), *SMALL, "--epochs", "1"]) for _ in range(n)]
        results = [(p.wait(timeout=600), p.communicate()[1]) for p in procs]
        codes = sorted(code for code, _ in results)
        refused = [err for code, err in results if code == 2]
        reasons = all("in use by" in e or "already holds a run" in e for e in refused)
        same, detail = same_as_baseline(ws, out, reference=ws.trained())
        hidden = _hidden(out)
        ok = codes == [0] + [2] * (n - 1) and reasons and same and not hidden
        return f"exit codes {codes}; the one run that proceeded: {detail}", ok

    return run


# --- integrity and security ----------------------------------------------------------------------


def _flip_a_weight(path: Path) -> None:
    """Change one byte in the middle of the tensors' stored data (not the safetensors header,
    which is its first 8 + N bytes, N little-endian in the first 8)."""
    data = bytearray(path.read_bytes())
    start_of_data = 8 + int.from_bytes(data[:8], "little")
    data[(start_of_data + len(data)) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _altered_checkpoint(ws: Workspace) -> tuple[str, bool]:
    out = ws.copy_of_trained("altered")
    _flip_a_weight(out / CHECKPOINT)
    resumed = cli(["--out", str(out), "--resume", "--epochs", "2", "--no-progress"])
    evaluated = cli(["evaluate", str(out), *QUICK_EVALUATE])
    offer = shlex.split(resumed.stderr.split("run: ")[-1].strip())
    moved = offer[:1] == ["mv"] and len(offer) == 3
    if moved:
        os.replace(offer[1], offer[2])
    again = cli(["--out", str(out), "--resume", "--epochs", "2", "--no-progress"])
    ok = (
        one_line_error(resumed, "do not match its checksum")
        and "checkpoint before it is whole" in resumed.stderr
        and one_line_error(evaluated, "do not match its checksum")
        and moved
        and again.code == 0
    )
    return (
        f"resume exit {resumed.code}, evaluate exit {evaluated.code}: "
        f"{resumed.stderr.strip()[-150:]}; after the offered mv, resume exit {again.code}"
    ), ok


class _RunsCode:
    """Unpickling this runs a shell command: what a hostile checkpoint would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _checkpoint_with_code(ws: Workspace) -> tuple[str, bool]:
    out = ws.copy_of_trained("hostile-checkpoint")
    marker = out.parent / f"{out.name}-code-ran"
    state = load(out / CHECKPOINT)
    state["model"] = {"weights": _RunsCode(marker)}
    # a run directory as an earlier release wrote it (checkpoint.pt by torch.save), hostile;
    # a pickle named checkpoint.safetensors is not read at all (not a safetensors file)
    torch.save(state, out / LEGACY_CHECKPOINT)
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        (out / name).unlink(missing_ok=True)
    done = [
        cli(["evaluate", str(out), *QUICK_EVALUATE]),
        cli(["report", str(out), "--refresh-figures"]),
        cli(["sample", str(out)]),
        cli(["--out", str(out), "--resume", "--epochs", "2", "--no-progress"]),
    ]
    ok = all(one_line_error(d, "loading it could run code") for d in done) and not marker.exists()
    return (
        f"evaluate, report, sample, resume: exit {[d.code for d in done]}; code ran: "
        f"{marker.exists()}; {done[0].stderr.strip()[:120]}"
    ), ok


HOSTILE = "<script>alert(1)</script>"


def _hostile_report(ws: Workspace) -> tuple[str, bool]:
    out = ws.copy_of_trained("hostile")
    named = out.parent / f"{out.name}-<img src=x onerror=alert(1)>"
    os.replace(out, named)
    summary = (named / "summary.json").read_text()
    (named / "summary.json").write_text(
        summary.replace('"device": "cpu"', f'"device": "{HOSTILE}"')
    )
    done = cli(["report", str(named)])
    page = (named / "report.html").read_text() if done.code == 0 else ""
    ok = done.code == 0 and "<script>alert" not in page and "<img src=x" not in page
    ok = ok and "&lt;script&gt;" in page and "&lt;img src=x" in page
    return f"exit {done.code}; hostile text escaped in report.html: {ok}", ok


# --- nothing half-written ------------------------------------------------------------------------

# Stops the process as it is about to make a file whole: half of it written, not yet renamed.
_STOP_AT_WRITE = """
import os, signal
real_fsync = os.fsync
seen = [0]
def fsync(fd):
    name = os.path.basename(os.readlink(f"/proc/self/fd/{{fd}}"))
    if name.startswith(".{target}.") and name.endswith(".tmp"):
        seen[0] += 1
        if seen[0] == {nth}:
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            os.kill(os.getpid(), signal.{signal})
    return real_fsync(fd)
os.fsync = fsync
"""


def stop_at_write(target: str, sig: str = "SIGKILL", nth: int = 1) -> str:
    return _STOP_AT_WRITE.format(target=target, signal=sig, nth=nth)


def _sigterm_in_final_figures(ws: Workspace) -> tuple[str, bool]:
    out = ws.new_dir("sigterm-figures")
    done = cli(
        ["--out", str(out), *SMALL, "--epochs", "1"],
        inject=stop_at_write("prior_samples.png", "SIGTERM"),
    )
    hidden = _hidden(out)
    whole = load(out / CHECKPOINT)["position"]["epoch"] == 1 and (out / "summary.json").exists()
    report = cli(["report", str(out)])
    drawn = len(list((out / "figures").glob("*.png"))) if (out / "figures").is_dir() else 0
    ok = (
        one_line_error(done, "stopped by SIGTERM during train", code=143)
        and not hidden
        and whole
        and report.code == 0
        and drawn == 7
    )
    return (
        f"exit {done.code}: {done.stderr.strip()[:110]}; temporaries left: {hidden}; "
        f"then report drew {drawn} figures"
    ), ok


_KILL_IN_CLEAR = """
import os, pathlib, signal
real_unlink = pathlib.Path.unlink
def unlink(self, *a, **k):
    if self.name == "metrics.csv":  # the checkpoints and config.json are gone already
        os.kill(os.getpid(), signal.SIGKILL)
    return real_unlink(self, *a, **k)
pathlib.Path.unlink = unlink
"""


def _kill_during_overwrite(ws: Workspace) -> tuple[str, bool]:
    out = ws.copy_of_trained("kill-in-overwrite")
    (out / "notes.txt").write_text("mine")
    done = cli(["--out", str(out), "--overwrite", *SMALL, "--epochs", "1"], inject=_KILL_IN_CLEAR)
    half = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    report = cli(["report", str(out)])  # reads: names the state
    train = cli(["--out", str(out), *SMALL, "--epochs", "1"])  # writes: finishes the removal
    left = sorted(p.name for p in out.iterdir())
    ok = (
        done.code == -9
        and one_line_error(report, "part-way through being replaced")
        and one_line_error(train, "did not write (notes.txt)")
        and left == ["notes.txt"]
    )
    return f"killed with {half} left; report: {report.stderr[17:90]}; then {left}", ok


def _with_everything(ws: Workspace) -> Path:
    """The trained run with its evaluation, report and samples (made once, then copied)."""
    done = ws.root / "trained-with-everything"
    if not done.exists():
        out = ws.copy_of_trained("with-everything")
        for prepare in (
            ["evaluate", str(out), *QUICK_EVALUATE],
            ["report", str(out)],
            ["sample", str(out), "--num", "4"],
        ):
            assert cli(prepare).code == 0
        os.replace(out, done)
    return done


def _killed_while_writing(label: str, args: list[str], target: str, nth: int = 1) -> Case:
    """Run ``args`` (RUN: a copy of a trained run, whose evaluation, report and samples exist)
    killed while it writes ``target``: every visible file is as it was before."""

    def run(ws: Workspace) -> tuple[str, bool]:
        out = ws.new_dir(label)
        shutil.copytree(_with_everything(ws), out)
        visible = _visible(out)
        done = cli([str(out) if a == "RUN" else a for a in args], inject=stop_at_write(target))
        after = _visible(out)
        again = cli(["report", str(out)])  # the next writer clears what the kill left
        hidden = _hidden(out)
        ok = done.code == -9 and after == visible and again.code == 0 and not hidden
        return (
            f"killed (exit {done.code}) writing {target}: every file as before: "
            f"{after == visible}; hidden leftovers after the next command: {hidden or 'none'}"
        ), ok

    return Case(label, f"SIGKILL while writing {target}: the old files, whole", run)


RUN_DIR_CASES = [
    _overwrite_refused("overwrite-with-missing-data", ["--dataset", "npz", "--data-dir",
                       "/nonexistent.npz"], "does not exist"),
    _overwrite_refused("overwrite-with-bad-seed", ["--seed", "-1"], "--seed must be in"),
    _overwrite_refused("overwrite-grey-to-bernoulli", ["--binarize", "none"], "grey levels"),
    Case("folder-of-other-files", "exit 2 'did not write'; their files kept", _foreign_folder),
    Case("overwrite-removes-every-artifact", "evaluation, report, samples gone; notes.txt kept",
         _overwrite_removes_everything),
    Case("kill-during-overwrite", "readers name it; the next writer finishes the removal",
         _kill_during_overwrite),
    Case("resume-removes-stale-evaluation", "evaluation.json of the old model removed",
         _resume_removes_stale),
    Case("second-writer-refused", "train, evaluate, report: exit 2 naming the holder's pid",
         _second_writer),
    Case("stale-lock-taken-over", "a killed holder's lock is taken over, and said so",
         _stale_lock),
    Case("two-concurrent-writers", "exactly one proceeds; its run = an undisturbed run",
         _concurrent(2)),
    Case("three-concurrent-writers", "exactly one proceeds; its run = an undisturbed run",
         _concurrent(3)),
    Case("four-concurrent-writers", "exactly one proceeds; its run = an undisturbed run",
         _concurrent(4)),
    Case("checkpoint-bytes-altered", "exit 2 'checksum', the previous one offered and usable",
         _altered_checkpoint),
    Case("checkpoint-that-runs-code", "exit 2 'could run code' for every command; nothing ran",
         _checkpoint_with_code),
    Case("report-escapes-hostile-text", "a hostile run name and summary value escaped",
         _hostile_report),
    Case("sigterm-during-final-figures", "exit 143, one line; run whole; report draws them",
         _sigterm_in_final_figures),
    _killed_while_writing("kill-during-report-figures", ["report", "RUN", "--refresh-figures"],
                          "latent_map.png"),
    _killed_while_writing("kill-during-evaluate", ["evaluate", "RUN", *QUICK_EVALUATE, "--seed",
                          "1"], "evaluation.json"),
    _killed_while_writing("kill-during-report", ["report", "RUN"], "report.html"),
    _killed_while_writing("kill-during-sample", ["sample", "RUN", "--seed", "1"], "samples.png"),
]  # fmt: skip
