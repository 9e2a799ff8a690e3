"""A file of the run that cannot be written (no space left, a file-size limit): the command
stops with exit status 4, names the file, leaves what was there whole and says the command that
finishes the job; no thread prints a traceback. And the run's directories get the usual
permissions, as its files do."""

from __future__ import annotations

import errno
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch

from pyro_vae.cli import EXIT_NOT_WRITTEN, main
from pyro_vae.training import run_dir as runs
from pyro_vae.training.atomic_files import _UMASK, RunFileError, atomic_write, replace_directory
from pyro_vae.training.checkpoint import load_checkpoint, save_checkpoint
from pyro_vae.training.run_dir import MetricsLog, read_metrics
from pyro_vae.training.tensorboard import summary_writer

TINY = ["--epochs", "1", "--hidden", "16", "--z-dim", "2", "--no-progress"]


class _Full(io.FileIO):
    """A file on a disk with ``room`` bytes left: writes past them fail with ``code``."""

    def __init__(self, fd: int, code: int, room: int) -> None:
        super().__init__(fd, "wb")
        self.code, self.room = code, room

    def write(self, data) -> int:
        if self.room <= 0:
            raise OSError(self.code, os.strerror(self.code))
        written = super().write(memoryview(data).cast("B")[: self.room])
        self.room -= written
        return written


@pytest.fixture
def failing(monkeypatch) -> Callable[..., None]:
    """``failing(pattern, code, room)``: atomic writes of the files whose name matches
    ``pattern`` fail with ``code`` after ``room`` bytes, as on a full disk."""
    rules: list[tuple[str, int, int]] = []
    names: dict[int, str] = {}
    real_mkstemp, real_fdopen = tempfile.mkstemp, os.fdopen

    def mkstemp(*args, **kwargs):
        fd, tmp = real_mkstemp(*args, **kwargs)
        names[fd] = Path(tmp).name[1:].rsplit(".", 2)[0]  # .NAME.random.tmp
        return fd, tmp

    def fdopen(fd, *args, **kwargs):
        name = names.pop(fd, None)
        for pattern, code, room in rules:
            if name is not None and fnmatch(name, pattern):
                return io.BufferedWriter(_Full(fd, code, room))
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "fdopen", fdopen)
    return lambda pattern, code=errno.ENOSPC, room=1000: rules.append((pattern, code, room))


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    """A run of one epoch, figures and TensorBoard log included, made under umask 022."""
    out = tmp_path_factory.mktemp("written") / "run"
    old = os.umask(0o022)
    try:
        assert main(["train", *TINY, "--out", str(out)]) == 0
    finally:
        os.umask(old)
    return out


@pytest.fixture
def run(one_epoch, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(one_epoch, copy)
    return copy


def _contents(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def _said(stderr: str) -> tuple[str, str]:
    """The two lines of a write failure, without their 'pyro-vae: ' prefix."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 2, stderr
    assert lines[0].startswith("pyro-vae: error: could not write ") and lines[1].startswith(
        "pyro-vae: "
    )
    return lines[0].removeprefix("pyro-vae: error: "), lines[1].removeprefix("pyro-vae: ")


def _command(line: str) -> list[str]:
    """The command the line ends with, as main() takes it."""
    words = shlex.split(line.split(": ")[-1])
    assert words[0] == "pyro-vae"
    return words[1:]


def test_a_file_size_limit_stops_training_once_with_no_thread_traceback(tmp_path):
    """Under ``ulimit -f`` (SIGXFSZ is ignored by Python, so write() fails with EFBIG) the
    TensorBoard writer's thread is the first to fail: its error is reported by the main
    thread, with its own exit status, and the thread prints nothing."""
    out = tmp_path / "run"

    # the shell sets the limit (49 blocks of 1 KiB) before it becomes Python: a preexec_fn
    # would run Python code in the forked child of this multithreaded process (JAX's threads)
    command = shlex.join([sys.executable, "-m", "pyro_vae", "train", *TINY, "--out", str(out)])
    done = subprocess.run(
        ["bash", "-c", f"ulimit -f 49 && exec {command}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == EXIT_NOT_WRITTEN, done.stderr
    assert "Exception in thread" not in done.stderr and "Traceback" not in done.stderr
    error, kept = _said(done.stderr)
    (events,) = (out / runs.TENSORBOARD).iterdir()
    assert error == f"could not write {str(events)!r}: File too large (EFBIG)"
    assert kept.startswith("the TensorBoard log keeps what was written before")
    assert "start the run again (it had no checkpoint yet)" in kept
    assert _command(kept) == ["train", *TINY, "--out", str(out), "--overwrite"]
    assert not (out / runs.CHECKPOINT).exists()
    assert len(read_metrics(out / runs.METRICS)) == 1  # whole rows only
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    assert list(EventFileLoader(str(events)).Load())  # read up to the cut, without error


def test_a_checkpoint_that_cannot_be_written_leaves_the_last_one_whole(
    run, failing, capsys, monkeypatch
):
    before = (run / runs.CHECKPOINT).read_bytes()
    failing(runs.CHECKPOINT, room=5000)
    assert main(["train", "--resume", "--epochs", "2", "--out", str(run)]) == EXIT_NOT_WRITTEN
    error, kept = _said(capsys.readouterr().err)
    path = run / runs.CHECKPOINT
    assert error == f"could not write {str(path)!r}: No space left on device (ENOSPC)"
    assert kept.startswith(f"{runs.CHECKPOINT} is as it was before")
    assert "once there is space, continue the run: " in kept
    assert path.read_bytes() == before
    assert load_checkpoint(path)["position"]["epoch"] == 1
    assert not list(run.glob(".*.tmp"))
    monkeypatch.undo()  # room again: the command given finishes the run
    assert _command(kept) == ["train", "--resume", "--out", str(run)]
    assert main(_command(kept)) == 0
    assert load_checkpoint(path)["position"]["epoch"] == 2
    assert len(read_metrics(run / runs.METRICS)) == 2


def test_figures_that_cannot_be_written_leave_the_old_ones(run, failing, capsys, monkeypatch):
    figures = run / runs.FIGURES
    before = _contents(figures)
    failing("*.png", errno.EFBIG, room=10_000)
    argv = ["report", str(run), "--refresh-figures"]
    assert main(argv) == EXIT_NOT_WRITTEN
    error, kept = _said(capsys.readouterr().err)
    named = re.fullmatch(r"could not write '(.*)': File too large \(EFBIG\)", error)
    assert named and Path(named[1]).parent == figures  # the file it was to become
    assert kept.startswith("figures/ is as it was before")
    assert kept.endswith(
        "once the file-size limit allows it, run the command again: "
        + (shlex.join(["pyro-vae", *argv]))
    )
    assert _contents(figures) == before
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".figures")) == []
    with pytest.raises(RunFileError) as raised:  # --debug: the traceback, as for any error
        main(["--debug", *argv])
    assert raised.value.errno == errno.EFBIG and Path(raised.value.filename).parent == figures


def test_figures_that_cannot_be_written_after_training_are_drawn_by_report(
    tmp_path, failing, capsys, monkeypatch
):
    out = tmp_path / "run"
    failing("*.png", errno.ENOSPC, room=0)
    assert main(["train", *TINY, "--no-tensorboard", "--out", str(out)]) == EXIT_NOT_WRITTEN
    error, kept = _said(capsys.readouterr().err)
    assert f"could not write {str(out / runs.FIGURES)}/" in error.replace("'", "")
    assert kept.startswith("no part of figures/ is left; once there is space, draw the figures")
    assert (out / runs.CHECKPOINT).exists() and (out / runs.SUMMARY).exists()
    assert not (out / runs.FIGURES).exists()
    monkeypatch.undo()
    assert _command(kept) == ["report", str(out), "--refresh-figures"]
    assert main(_command(kept)) == 0
    assert (out / runs.FIGURES / "loss_curves.png").stat().st_size > 10_000


def test_a_failed_torch_save_names_its_file_and_keeps_the_old_one(tmp_path, failing):
    """torch.save reports a failed write as a RuntimeError: the OSError under it is found."""
    path = tmp_path / "state.pt"
    atomic_write(path, lambda f: torch.save({"old": torch.zeros(3)}, f))
    failing("state.pt", errno.EDQUOT, room=5000)
    with pytest.raises(RunFileError) as raised:
        atomic_write(path, lambda f: torch.save({"new": torch.zeros(100_000)}, f))
    assert raised.value.errno == errno.EDQUOT and raised.value.filename == str(path)
    assert torch.load(path, weights_only=True)["old"].shape == (3,)
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_no_room_to_keep_the_previous_checkpoint_changes_neither(tmp_path, monkeypatch):
    """Without hard links the checkpoint before is kept by a copy, which may find no room."""
    path = tmp_path / runs.CHECKPOINT
    save_checkpoint(path, {"step": 1})
    save_checkpoint(path, {"step": 2})
    before = _contents(tmp_path)

    def no_links(source, target):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    def no_room(source, target):
        Path(target).write_bytes(Path(source).read_bytes()[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(shutil, "copy2", no_room)
    with pytest.raises(RunFileError) as raised:
        save_checkpoint(path, {"step": 3})
    assert raised.value.filename == str(tmp_path / runs.PREVIOUS_CHECKPOINT)
    assert _contents(tmp_path) == before  # nothing left behind either


def test_a_metrics_row_that_cannot_be_written_is_cut_off(tmp_path):
    path = tmp_path / runs.METRICS
    log = MetricsLog(path, ["epoch", "loss"])
    log.append({"epoch": 1, "loss": 0.5})
    before = path.read_bytes()
    room = 4  # the disk takes part of the next row
    log._file = _Full(os.open(path, os.O_WRONLY | os.O_APPEND), errno.ENOSPC, room)
    with pytest.raises(RunFileError, match="No space left") as raised:
        log.append({"epoch": 2, "loss": 0.25})
    log.close()
    assert raised.value.filename == str(path) and "ends at its last whole row" in raised.value.kept
    assert path.read_bytes() == before
    assert read_metrics(path) == [{"epoch": 1.0, "loss": 0.5}]


# --- permissions ---------------------------------------------------------------------------------


def test_a_runs_directories_and_files_have_the_usual_permissions(one_epoch):
    """Made under umask 022: directories 0755, files 0644 (as the umask of the process at
    import has it), figures/ included."""
    assert one_epoch.stat().st_mode & 0o777 == 0o755
    for directory in (runs.FIGURES, runs.TENSORBOARD):
        assert (one_epoch / directory).stat().st_mode & 0o777 == 0o755, directory
    files = [p for p in one_epoch.rglob("*") if p.is_file()]
    assert len(files) > 10
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o666 & ~_UMASK, p


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=oct)
def test_directories_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        run_dir = runs.RunDirectory(tmp_path / "run")
        with run_dir.lock("train"):
            run_dir.replace_figures(lambda d: (d / "a.png").write_bytes(b"png"))
            replace_directory(run_dir / "figures", lambda d: (d / "b.png").write_bytes(b"png"))
            writer = summary_writer(run_dir / runs.TENSORBOARD)
            writer.close()
    finally:
        os.umask(old)
    for directory in (run_dir.path, run_dir / runs.FIGURES, run_dir / runs.TENSORBOARD):
        assert directory.stat().st_mode & 0o777 == 0o777 & ~umask, directory
    assert [p.name for p in (run_dir / runs.FIGURES).iterdir()] == ["b.png"]
