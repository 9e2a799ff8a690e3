"""Writing files so that a reader never sees half of one.

Every file of a run directory goes through :func:`atomic_write`: written to a temporary name in
the same directory, flushed to disk (fsync) and renamed over the old one. ``os.replace`` is
atomic on POSIX file systems, so a crash at any moment leaves either the previous file or the
new one, whole, and at most a hidden ``.NAME.*.tmp`` that the next writer removes. A set of
files that must change together (the figures) is drawn into a hidden directory and swapped in
(:func:`replace_directory`).

A write that fails (no space left, a file-size limit, a quota, an I/O error) raises
:class:`RunFileError`, which names the file and says what is left of it; the command line
reports it with its own exit status.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

_UMASK = os.umask(0)
os.umask(_UMASK)


class RunFileError(OSError):
    """A file could not be written. ``filename`` is its path; ``kept`` says what is left
    (for a file written atomically: the previous one, whole). Made by :meth:`of`."""

    kept: str = ""

    @classmethod
    def of(cls, err: OSError, path: Path, kept: str | None = None) -> RunFileError:
        """``err`` (a failed write) as the error of the file ``path``."""
        new = cls(err.errno, err.strerror or str(err), str(path))
        new.kept = kept or _kept(Path(path), "", "a file is replaced only once written whole")
        return new


def _kept(path: Path, slash: str, why: str) -> str:
    """What a failed write left of ``path``: the old one, or nothing."""
    name = path.name + slash
    return f"{name} is as it was before ({why})" if path.exists() else f"no part of {name} is left"


class _Recorded:
    """A file that remembers the OSError of a failed write: some writers (``torch.save``)
    turn it into another exception."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _fsync_directory(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` so that readers never see a partial file."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise RunFileError.of(err, path) from err
    recorded = None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            recorded = _Recorded(f)
            write(cast(IO[bytes], recorded))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        failed = recorded.error if recorded is not None else None
        if isinstance(err, OSError):
            failed = failed or err
        if failed is not None and isinstance(err, Exception):
            raise RunFileError.of(failed, path) from err
        raise
    _fsync_directory(path.parent)


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_json(path: Path, obj: Any, sort_keys: bool = True) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n").encode())


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def make_directory(parent: Path, prefix: str, suffix: str) -> Path:
    """A new directory of a unique name in ``parent``, with the usual permissions: 0o777 less
    the umask, as ``mkdir`` gives (``tempfile.mkdtemp`` makes 0700)."""
    while True:
        directory = Path(parent) / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            directory.mkdir(0o777)
        except FileExistsError:
            continue
        return directory


def replace_directory(path: Path, fill: Callable[[Path], None]) -> None:
    """Replace the directory ``path`` by a new one that ``fill(new_dir)`` writes.

    ``fill`` writes into a hidden sibling; only once it has finished is the old directory moved
    aside and the new one renamed into place (two renames, then the old one is removed). A
    crash before the swap leaves the old directory; one between the renames leaves the old
    directory under ``.NAME.old`` where :func:`recover_directory` puts it back.
    """
    path = Path(path)
    kept = _kept(path, "/", "its files are swapped in only as a whole set")
    try:
        staging = make_directory(path.parent, f".{path.name}.", ".new")
    except OSError as err:
        raise RunFileError.of(err, path, kept) from err
    try:
        fill(staging)
        for f in staging.iterdir():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OSError):  # named as the file it was to become
            name = Path(err.filename).name if err.filename else None
            inside = name and Path(err.filename).parent == staging
            raise RunFileError.of(err, path / name if inside else path, kept) from err
        raise
    old = path.parent / f".{path.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(staging, path)
    _fsync_directory(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_directory(path: Path) -> None:
    """Undo what a crash inside :func:`replace_directory` left: the old directory back in
    place if the new one never arrived; unfinished new ones removed."""
    path = Path(path)
    old = path.parent / f".{path.name}.old"
    if old.is_dir():
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, path)
    for staging in path.parent.glob(f".{path.name}.*.new"):
        shutil.rmtree(staging, ignore_errors=True)


def remove_temporaries(directory: Path) -> None:
    """Temporary files of writes that a kill interrupted (``.NAME.*.tmp``)."""
    for stale in Path(directory).glob(".*.tmp"):
        stale.unlink(missing_ok=True)
