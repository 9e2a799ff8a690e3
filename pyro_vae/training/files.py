"""Writing files so that a reader never sees half of one.

Every file of a run directory goes through :func:`atomic_write`: written to a temporary name in
the same directory, flushed to disk (fsync) and renamed over the old one. ``os.replace`` is
atomic on POSIX file systems, so a crash at any moment leaves either the previous file or the
new one, whole, and at most a hidden ``.NAME.*.tmp`` that the next writer removes. A set of
files that must change together (the figures) is drawn into a hidden directory and swapped in
(:func:`replace_directory`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_directory(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` so that readers never see a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
    staging = make_directory(path.parent, f".{path.name}.", ".new")
    try:
        fill(staging)
        for f in staging.iterdir():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
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
