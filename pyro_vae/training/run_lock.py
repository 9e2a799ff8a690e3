"""One writer per run directory: an exclusive lock held for the whole of a command.

The lock is ``flock(2)`` on RUN_DIR/.pyro-vae.lock: the kernel releases it when its holder
exits, however it exits, so a lock left by a killed process is never in the way. The file
records the holder (pid, command, start time) for the message a second writer gets, and is
removed on a clean release: a lock file found on taking the lock is one a killed process
left, and is reported as taken over. A process that opened the file just before it was
removed finds, once it holds the lock, that the path names another file (or none) and
starts again, so two processes never both hold "the" lock. (``fcntl`` is POSIX; this module
needs Linux or macOS.)
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path
from types import TracebackType

LOCK_NAME = ".pyro-vae.lock"
log = logging.getLogger("pyro_vae")


class RunInUse(ValueError):
    """Another process holds the run directory."""


# The descriptors of the locks this process holds. A child forked while one is held (a
# DataLoader worker) closes its copy at once: a flock belongs to the open file, so a copy left
# open in a worker that outlives a killed parent would keep the run locked after it died.
_HELD: set[int] = set()


def _forget_held_in_child() -> None:
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_held_in_child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunLock:
    """``with RunLock(directory, "train"):`` — the directory must exist."""

    def __init__(self, directory: str | Path, command: str) -> None:
        self.path = Path(directory) / LOCK_NAME
        self.command = command
        self._fd: int | None = None
        self.took_over: dict | None = None  # the record a killed holder left, if any

    def _record(self, fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        try:
            record = json.loads(raw) if raw.strip() else {}
        except ValueError:
            record = {}
        return record if isinstance(record, dict) else {}

    def acquire(self) -> RunLock:
        for _ in range(5):  # a lock file removed between open and flock: open the new one
            fd = self._lock_file()
            if fd is not None:
                break
        else:
            raise RunInUse(f"{str(self.path.parent)!r} keeps changing: another process is at it")
        self._take(fd)
        return self

    def _lock_file(self) -> int | None:
        """An open, locked descriptor of the lock file now at ``path`` (None: it was replaced
        or removed while we waited; try again)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # the directory itself went away meanwhile
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._record(fd)
            os.close(fd)
            who = (
                f"pid {holder.get('pid')}, pyro-vae {holder.get('command')}, since "
                f"{holder.get('since')}"
                if holder
                else "another process"
            )
            raise RunInUse(
                f"{str(self.path.parent)!r} is in use by another pyro-vae process ({who}): "
                "wait for it to finish, or choose another directory"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None
        return fd

    def _take(self, fd: int) -> None:
        stale = self._record(fd)
        if stale and stale.get("pid") != os.getpid():
            self.took_over = stale
            pid = stale.get("pid")
            alive = isinstance(pid, int) and pid > 0 and _alive(pid)
            state = "unlocked (it may still be running)" if alive else "no longer running"
            log.warning(
                "took over the lock of %s: pid %s (pyro-vae %s) is %s",
                self.path.parent,
                stale.get("pid"),
                stale.get("command"),
                state,
            )
        record = {
            "pid": os.getpid(),
            "command": self.command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        self._fd = fd
        _HELD.add(fd)

    def release(self) -> None:
        """Remove the lock file (still holding it), then let go."""
        if self._fd is None:
            return
        _HELD.discard(self._fd)
        try:
            self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
