"""A run directory on disk, the one lasting record of a run, and its contract:

    RUN_DIR/config.json                  the options the run was started with
    RUN_DIR/metrics.csv                  one row per epoch, appended and flushed as it ends
    RUN_DIR/summary.json                 final numbers
    RUN_DIR/checkpoint.safetensors       model, optimizer, random-number states, position;
                                         versioned and checksummed, no pickle
    RUN_DIR/checkpoint.prev.safetensors  the checkpoint before it
    RUN_DIR/tensorboard/                 TensorBoard event files (pyro_vae.training.tensorboard)
    RUN_DIR/tracker.json                 the run's record on an experiment tracker (--tracker:
                                         pyro_vae.training.trackers), for --resume
    RUN_DIR/figures/*.png                (drawn by pyro_vae.report, swapped in as one set)
    RUN_DIR/evaluation.json              (``pyro-vae evaluate``)
    RUN_DIR/report.html                  (``pyro-vae report``)
    RUN_DIR/samples.png, .pt             (``pyro-vae sample``)

- **One writer.** Every command that writes holds :meth:`RunDirectory.lock` for its whole life
  (:mod:`pyro_vae.training.run_lock`); a second one is refused, naming the holder.
- **Nothing half-written.** Every file is written atomically
  (:mod:`pyro_vae.training.atomic_files`).
- **Nothing lost.** A new run goes only into a missing or empty directory; a directory that
  holds a run needs ``--resume`` or ``--overwrite``, and one holding other files needs
  ``--overwrite``. ``--overwrite`` removes every artifact above (and only those), once the
  new run's options, data and model have all been checked.
- **Nothing stale.** Training removes the evaluation, report, samples and figures of the model
  it is about to change, so no file describes a model the checkpoint no longer holds.
- **Nothing executed.** Checkpoints are safetensors files, which hold tensors and JSON only,
  and are verified against their checksum (:mod:`pyro_vae.training.checkpoint`).
- **Earlier runs still load.** A run written by 0.2.0 or before has ``checkpoint.pt`` (and
  ``checkpoint.prev.pt``), read by PyTorch's weights-only unpickler: it is evaluated, reported
  and resumed as it is; resuming writes ``checkpoint.safetensors``, and the old files go once
  two new checkpoints are kept.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shlex
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .atomic_files import (
    RunFileError,
    atomic_write,
    recover_directory,
    remove_temporaries,
    replace_directory,
    write_json,
    write_text,
)
from .checkpoint import CheckpointError, load_checkpoint, previous_path, save_checkpoint
from .run_lock import LOCK_NAME, RunInUse, RunLock

CONFIG, METRICS, SUMMARY, CHECKPOINT, FIGURES, EVALUATION = (
    "config.json",
    "metrics.csv",
    "summary.json",
    "checkpoint.safetensors",
    "figures",
    "evaluation.json",
)
PREVIOUS_CHECKPOINT = previous_path(Path(CHECKPOINT)).name
# what 0.2.0 and before wrote (torch.save): read, resumed, and removed once two new ones are kept
LEGACY_CHECKPOINT = "checkpoint.pt"
LEGACY_PREVIOUS_CHECKPOINT = previous_path(Path(LEGACY_CHECKPOINT)).name
CHECKPOINTS = (CHECKPOINT, PREVIOUS_CHECKPOINT, LEGACY_CHECKPOINT, LEGACY_PREVIOUS_CHECKPOINT)
REPORT, SAMPLES, SAMPLES_TENSOR = "report.html", "samples.png", "samples.pt"
TENSORBOARD = "tensorboard"
TRACKER = "tracker.json"
# the training record, and what is derived from the model it holds
RECORD = (*CHECKPOINTS, CONFIG, METRICS, SUMMARY, TENSORBOARD, TRACKER)  # the model first
DERIVED = (EVALUATION, REPORT, SAMPLES, SAMPLES_TENSOR, FIGURES)
CLEARING = ".pyro-vae.clearing"  # there while --overwrite removes a run: a kill is finished next
# what a checkpoint must hold to continue a run
CHECKPOINT_KEYS = {"model", "optimizer", "position", "config", "rng", "metrics"}

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "LEGACY_CHECKPOINT",
    "EVALUATION",
    "FIGURES",
    "METRICS",
    "REPORT",
    "SUMMARY",
    "RunDirectory",
    "RunDirectoryError",
    "RunInUse",
    "atomic_write",
    "find_checkpoint",
    "find_previous_checkpoint",
    "load_checkpoint",
    "read_metrics",
    "save_checkpoint",
    "write_json",
    "write_text",
]


class RunDirectoryError(ValueError):
    """The run directory cannot be used as asked (exists, empty, corrupt, other config)."""


def find_checkpoint(run_dir: str | Path) -> Path:
    """The run's checkpoint: checkpoint.safetensors, or the checkpoint.pt of a run written by
    an earlier release where that is all there is (checkpoint.safetensors where neither is)."""
    run_dir = Path(run_dir)
    for name in (CHECKPOINT, LEGACY_CHECKPOINT):
        if (run_dir / name).exists():
            return run_dir / name
    return run_dir / CHECKPOINT


def find_previous_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint before :func:`find_checkpoint`'s: the newest older one that is there
    (a run resumed from an earlier release's checkpoint.pt has it as the one before its first
    checkpoint.safetensors); checkpoint.prev.safetensors where there is none."""
    run_dir = Path(run_dir)
    current = find_checkpoint(run_dir).name
    for name in CHECKPOINTS[CHECKPOINTS.index(current) + 1 :]:
        if (run_dir / name).exists():
            return run_dir / name
    return run_dir / PREVIOUS_CHECKPOINT


class MetricsLog:
    """Appends one CSV row per epoch and flushes it, so a killed run keeps its history. A row
    that cannot be written whole is cut off again (:class:`RunFileError`)."""

    def __init__(self, path: Path, fields: list[str]) -> None:
        self.path = Path(path)
        self.fields = fields
        new = not self.path.exists() or self.path.stat().st_size == 0
        try:
            self._file = open(self.path, "ab", buffering=0)
        except OSError as err:
            raise RunFileError.of(err, self.path) from err
        if new:
            self._write(dict(zip(fields, fields, strict=True)))

    def append(self, row: Mapping[str, Any]) -> None:
        self._write({k: row.get(k, "") for k in self.fields})

    def _write(self, row: Mapping[str, Any]) -> None:
        line = io.StringIO(newline="")
        csv.DictWriter(line, fieldnames=self.fields).writerow(row)
        data = memoryview(line.getvalue().encode())
        fd = self._file.fileno()
        size = os.fstat(fd).st_size
        try:
            while data:
                data = data[self._file.write(data) :]
            os.fsync(fd)
        except OSError as err:
            os.ftruncate(fd, size)
            kept = f"{self.path.name} ends at its last whole row"
            raise RunFileError.of(err, self.path, kept) from err

    def close(self) -> None:
        self._file.close()


def write_metrics(path: Path, fields: list[str], rows: list[Mapping[str, Any]]) -> None:
    """Replace the CSV with exactly ``rows`` (a resumed run drops rows past its checkpoint)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in fields})
    write_text(path, buffer.getvalue())


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv as numbers; one clear line if it is not one."""
    try:
        with open(path, newline="") as f:
            return [
                {str(k): float(v) for k, v in row.items() if k is not None and v not in ("", None)}
                for row in csv.DictReader(f)
            ]
    except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as err:
        raise RunDirectoryError(f"{str(path)!r} is not a metrics table ({err})") from None


class RunDirectory:
    """One run's directory. Only a process that ``writes`` (rank 0 of several) changes it."""

    def __init__(self, path: str | Path, writes: bool = True) -> None:
        if not str(path).strip():
            raise RunDirectoryError("a run directory needs a path; got an empty one")
        self.path = Path(path)
        self.writes = writes
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"{str(self.path)!r} is a file, not a directory")

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # --- what is there --------------------------------------------------------------------------

    def holds_a_run(self) -> bool:
        """A checkpoint or a metrics table is there (a config.json alone may be anyone's)."""
        return any((self.path / name).exists() for name in (*CHECKPOINTS, METRICS))

    def foreign_files(self) -> list[str]:
        """Names in the directory that are not a pyro-vae run's (all of them, but the lock,
        where there is no run: a lone config.json or summary.json may be anyone's)."""
        if not self.path.is_dir():
            return []
        ours = {*RECORD, *DERIVED, LOCK_NAME, CLEARING} if self.holds_a_run() else {LOCK_NAME}
        return sorted(
            p.name
            for p in self.path.iterdir()
            if p.name not in ours and not (p.name.startswith(".") and p.name.endswith(".tmp"))
        )

    def refuse_to_clobber(self) -> None:
        """A new run goes only into a missing or empty directory unless told (``overwrite``)."""
        if self.holds_a_run():
            raise RunDirectoryError(
                f"{str(self.path)!r} already holds a run: continue it with --resume, "
                "replace it with --overwrite, or choose another --out"
            )
        foreign = self.foreign_files()
        if foreign:
            shown = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
            raise RunDirectoryError(
                f"{str(self.path)!r} holds files pyro-vae did not write ({shown}): choose "
                "another --out, or pass --overwrite to write the run beside them"
            )

    def saved_state(self) -> dict[str, Any]:
        """The checkpoint a resumed run continues from, checked to be whole; if it is not and
        the one before it is, the message says how to go back to that one."""
        checkpoint = find_checkpoint(self.path)
        try:
            state = load_checkpoint(checkpoint)
        except FileNotFoundError:
            raise RunDirectoryError(
                f"nothing to resume: {str(checkpoint)!r} does not exist (a run stopped before "
                "its first checkpoint starts again with --overwrite)"
            ) from None
        except CheckpointError as err:
            raise RunDirectoryError(f"{err}{self.offer_previous()}") from None
        missing = CHECKPOINT_KEYS - set(state)
        if missing:
            raise RunDirectoryError(
                f"checkpoint {str(checkpoint)!r} is incomplete (no {', '.join(sorted(missing))})"
            )
        return state

    def offer_previous(self) -> str:
        """'; the checkpoint before it is whole ...: run mv ...', or '' if it is not."""
        current, previous = find_checkpoint(self.path), find_previous_checkpoint(self.path)
        try:
            position = load_checkpoint(previous)["position"]
        except (OSError, ValueError, KeyError, TypeError):
            return ""
        # an earlier release's checkpoint.pt is found once no checkpoint.safetensors is there
        legacy = previous.name in (LEGACY_CHECKPOINT, LEGACY_PREVIOUS_CHECKPOINT)
        target = self.path / (LEGACY_CHECKPOINT if legacy else CHECKPOINT)
        commands = [] if current == target else [f"rm {shlex.quote(str(current))}"]
        if previous != target:
            commands.append(f"mv {shlex.quote(str(previous))} {shlex.quote(str(target))}")
        return (
            f"; the checkpoint before it is whole (step {position['step']}): to continue from "
            f"there, run: {' && '.join(commands)}"
        )

    # --- changing it ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[RunDirectory]:
        """Hold the directory for ``command``, undoing first what a killed writer left
        half-done. A directory this call makes is removed again if nothing was written in
        it. A process that does not write takes no lock."""
        if not self.writes:
            yield self
            return
        made = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            with RunLock(self.path, command):
                remove_temporaries(self.path)
                recover_directory(self.path / FIGURES)
                if (self.path / CLEARING).exists():  # a kill interrupted --overwrite: finish it
                    self.clear()
                yield self
        finally:
            if made and self.path.is_dir() and not any(self.path.iterdir()):
                self.path.rmdir()  # nothing was written: leave no trace of the attempt

    def clear(self) -> None:
        """Remove every artifact of a previous run (``--overwrite``; under the lock, once all
        else is checked), the checkpoints first, so that no loadable model is left beside
        another run's config. Files pyro-vae did not write stay. A kill part-way leaves a
        marker, and the next command that takes the lock finishes the job."""
        if self.writes:
            write_text(self.path / CLEARING, "")
            self._remove(RECORD + DERIVED)
            (self.path / CLEARING).unlink()

    def _remove(self, names: tuple[str, ...]) -> None:
        for name in names:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)

    def start(self, config: Mapping[str, Any], fields: list[str], rows: list[dict]) -> None:
        """Lay out the directory for training: config.json, and metrics.csv holding ``rows``
        (a resumed run drops any rows written after its checkpoint); what was derived from
        the model before (evaluation, report, samples, figures) is removed."""
        if not self.writes:
            return
        self._remove(DERIVED)
        write_json(self.path / CONFIG, dict(config))
        write_metrics(self.path / METRICS, fields, rows)

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Write checkpoint.safetensors, keeping the one before; an earlier release's
        checkpoint.pt (a resumed run's) is kept as the one before until there are two new."""
        if self.writes:
            save_checkpoint(self.path / CHECKPOINT, state)
            if (self.path / PREVIOUS_CHECKPOINT).exists():
                self._remove((LEGACY_CHECKPOINT, LEGACY_PREVIOUS_CHECKPOINT))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        if self.writes:
            write_json(self.path / SUMMARY, dict(summary))

    def metrics_log(self, fields: list[str]) -> MetricsLog:
        return MetricsLog(self.path / METRICS, fields)

    def replace_figures(self, draw: Callable[[Path], None]) -> Path:
        """Draw a new set of figures (``draw(directory)``) and swap it in for the old one."""
        if self.writes:
            replace_directory(self.path / FIGURES, draw)
        return self.path / FIGURES
