"""Checkpoints that hold only tensors and plain data, carry their own checksum, and keep the
one before them.

A checkpoint is ``torch.save`` of a dict of tensors, numbers, strings, lists and dicts (random
states are tensors) plus ``"sha256"``, a digest of all of it (:func:`content_digest`). It is
read with ``torch.load(weights_only=True)``: PyTorch's restricted unpickler, which builds
tensors and plain containers and refuses any other Python object, so a checkpoint from
someone else cannot run code when it is loaded. The digest is then recomputed: a checkpoint
whose bytes were altered (a bad disk, a copy cut short) is named as corrupt instead of being
trained on. Writing one first keeps the current file as ``checkpoint.prev.pt`` (a hard link,
then an atomic rename), so the last two are always on disk.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .atomic_files import RunFileError, atomic_write

DIGEST_KEY = "sha256"
FORMAT_KEY, FORMAT = "format", 2  # 0.2.0 wrote checkpoints with neither key


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, corrupt, or holding code."""


def _feed(h: Any, obj: Any) -> None:
    """Hash ``obj`` by value, in a form that does not depend on how it was pickled."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):  # a tuple may come back a list: hash both alike
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    elif isinstance(obj, str):
        data = obj.encode()
        h.update(f"S{len(data)}:".encode() + data)
    elif obj is None or isinstance(obj, (bool, int)):
        h.update(f"P{obj!r};".encode())
    elif isinstance(obj, float):
        h.update(f"F{obj.hex()};".encode())
    else:
        raise TypeError(f"a checkpoint holds only tensors and plain data, not {type(obj)!r}")


def content_digest(state: Mapping[str, Any]) -> str:
    """SHA-256 of every key and value of ``state`` but the digest itself."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != DIGEST_KEY})
    return h.hexdigest()


def previous_path(path: Path) -> Path:
    """Where the checkpoint before ``path`` is kept: checkpoint.prev.pt beside checkpoint.pt."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` with its digest to ``path``, keeping the current file as the previous."""
    path = Path(path)
    state = {**state, FORMAT_KEY: FORMAT}
    state[DIGEST_KEY] = content_digest(state)
    if path.exists():
        keep = path.with_name(f".{path.name}.keep.tmp")
        keep.unlink(missing_ok=True)
        try:
            try:
                os.link(path, keep)
            except OSError:  # a file system without hard links
                shutil.copy2(path, keep)
            os.replace(keep, previous_path(path))
        except OSError as err:  # no room for the copy: both checkpoints are as they were
            keep.unlink(missing_ok=True)
            raise RunFileError.of(err, previous_path(path)) from err
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path``, verified, as it was given to :func:`save_checkpoint`.

    Raises :class:`CheckpointError` (one line) for a file that is not a checkpoint, holds
    anything but tensors and plain data, or fails its checksum; FileNotFoundError when there
    is none."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file", str(path))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err) or "weights_only" in str(err).lower():
            what = str(err).split("Unsupported global:")[-1].split(" was not")[0].strip()
            raise CheckpointError(
                f"refused to load {str(path)!r}: it holds Python objects other than tensors "
                f"and plain data ({what[:80]}); loading it could run code, so it is not read"
            ) from None
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt ({err})") from None
    except Exception as err:  # torch.load raises many types on a damaged file
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt ({err})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(path)!r} is not a pyro-vae checkpoint (no dict inside)")
    if FORMAT_KEY in state or DIGEST_KEY in state:
        try:
            same = content_digest(state) == state.get(DIGEST_KEY)
        except TypeError:
            same = False
        if not same:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is corrupt (its contents do not match its checksum)"
            )
    return {k: v for k, v in state.items() if k not in (FORMAT_KEY, DIGEST_KEY)}
