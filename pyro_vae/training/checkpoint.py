"""Checkpoints that hold only tensors and plain data, carry their own checksum and format
version, and keep the one before them.

A checkpoint (format 3) is one safetensors file, ``checkpoint.safetensors``: no pickle, so
reading one runs no code, and it loads on another machine and in a later release. Every tensor
of the saved state is a safetensors tensor named by its path in the state
(``model/encoder.net.0.weight``, ``optimizer/state/3/exp_avg``, ``rng/torch``), with its dtype
and shape. The rest of the state, and where each tensor sits in it, is JSON in the file's
metadata::

    {"format": "3", "structure": <JSON>, "sha256": <digest>, "writer": "pyro-vae 0.2.0"}

In ``structure`` a tensor is ``{"$tensor": NAME}``; a dict whose keys are all strings that do
not start with ``$`` is a JSON object, any other dict (the optimizer's state, keyed by ints) is
``{"$items": [[key, value], ...]}``; a module's ``state_dict`` (an OrderedDict) is
``{"$ordered": {...}, "$metadata": {...}}``, with the versions of its modules; a tuple is
``{"$tuple": [...]}``; lists, strings, ints, bools and None are themselves. A float is a JSON
number (Python writes the shortest decimal that reads back to the same float, bit for bit), and
NaN or an infinity is ``{"$float": "nan"}``.

``sha256`` is :func:`content_digest` of the state: recomputed on loading, it names a file
whose bytes were altered (a bad disk, a copy cut short) as corrupt instead of training on it.
Writing a checkpoint first keeps the current file as ``checkpoint.prev.safetensors`` (a hard
link, then an atomic rename), so the last two are always on disk.

Earlier releases wrote ``checkpoint.pt`` with ``torch.save``: a dict with ``"sha256"`` and
``"format": 2`` (after 0.2.0), or with neither (0.1.0 and 0.2.0). :func:`load_checkpoint`
still reads those, with ``torch.load(weights_only=True)``: PyTorch's restricted unpickler,
which builds tensors and plain containers and refuses any other Python object.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import shutil
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from ..version import __version__
from .atomic_files import RunFileError, write_bytes

DIGEST_KEY = "sha256"
FORMAT_KEY, FORMAT = "format", 3
SUFFIX = ".safetensors"
TENSOR, ITEMS, TUPLE, FLOAT = "$tensor", "$items", "$tuple", "$float"
ORDERED, MODULE_VERSIONS = "$ordered", "$metadata"  # a state_dict: OrderedDict, ._metadata


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, corrupt, or holding code."""


def _feed(h: Any, obj: Any) -> None:
    """Hash ``obj`` by value, in a form that does not depend on how it was stored."""
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
    """Where the checkpoint before ``path`` is kept: checkpoint.prev.safetensors beside
    checkpoint.safetensors (checkpoint.prev.pt beside an earlier release's checkpoint.pt)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


# --- the state as tensors and a JSON structure ----------------------------------------------------


def _split(obj: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` as JSON, each tensor replaced by a placeholder and put in ``tensors`` (a copy of
    its own: contiguous, on the CPU, sharing no memory) under ``name``, its path in the state."""
    if isinstance(obj, torch.Tensor):
        key, n = name, 1
        while key in tensors:  # paths that read alike ({1: .., "1": ..}, or "a/b")
            key, n = f"{name}~{n}", n + 1
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {TENSOR: key}
    if isinstance(obj, OrderedDict):  # a module's state_dict, with the versions of its modules
        versions = getattr(obj, "_metadata", None)
        kept = {} if versions is None else {MODULE_VERSIONS: _split(versions, "", {})}
        return {ORDERED: _split(dict(obj), name, tensors), **kept}
    if isinstance(obj, Mapping):
        within = f"{name}/" if name else ""
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: _split(v, f"{within}{k}", tensors) for k, v in obj.items()}
        return {ITEMS: [[_key(k), _split(v, f"{within}{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_split(v, f"{name}/{i}", tensors) for i, v in enumerate(obj)]
        return {TUPLE: items} if isinstance(obj, tuple) else items
    if isinstance(obj, float) and not math.isfinite(obj):
        return {FLOAT: repr(obj)}
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    raise TypeError(f"a checkpoint holds only tensors and plain data, not {type(obj)!r}")


def _key(key: Any) -> Any:
    if isinstance(key, torch.Tensor):
        raise TypeError("a checkpoint's dict keys are plain data, not tensors")
    return _split(key, "", {})


def _join(obj: Any, tensors: Mapping[str, torch.Tensor], used: set[str]) -> Any:
    """The state that :func:`_split` took apart (ValueError for a structure it did not make)."""
    if isinstance(obj, list):
        return [_join(v, tensors, used) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if obj.keys() == {TENSOR}:
        key = obj[TENSOR]
        if not isinstance(key, str) or key not in tensors:
            raise ValueError(f"its structure names a tensor {key!r} that is not in the file")
        used.add(key)
        return tensors[key]
    if obj.keys() == {FLOAT}:
        return float(obj[FLOAT])
    if obj.keys() == {TUPLE}:
        return tuple(_join(obj[TUPLE], tensors, used))
    if ORDERED in obj and obj.keys() <= {ORDERED, MODULE_VERSIONS}:
        ordered = OrderedDict(_join(obj[ORDERED], tensors, used))
        if MODULE_VERSIONS in obj:
            ordered._metadata = _join(obj[MODULE_VERSIONS], {}, set())  # type: ignore[attr-defined]
        return ordered
    if obj.keys() == {ITEMS}:
        return {_join(k, tensors, used): _join(v, tensors, used) for k, v in obj[ITEMS]}
    if any(k.startswith("$") for k in obj):
        raise ValueError(f"its structure holds an unknown entry ({sorted(obj)[0]!r})")
    return {k: _join(v, tensors, used) for k, v in obj.items()}


# --- writing and reading --------------------------------------------------------------------------


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` (format 3) with its digest, keeping the current file as the
    previous one. TypeError, before any file changes, for a value that is not a tensor or
    plain data."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    structure = _split({k: v for k, v in state.items() if k != DIGEST_KEY}, "", tensors)
    metadata = {
        FORMAT_KEY: str(FORMAT),
        "structure": json.dumps(structure, separators=(",", ":"), allow_nan=False),
        DIGEST_KEY: content_digest(state),
        "writer": f"pyro-vae {__version__}",
    }
    data = safetensors.torch.save(tensors, metadata=metadata)
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
    write_bytes(path, data)


def is_safetensors(data: bytes) -> bool:
    """Whether ``data`` begins as a safetensors file does: an 8-byte little-endian header
    length that fits, then the header's JSON object."""
    return data[8:9] == b"{" and int.from_bytes(data[:8], "little") <= len(data) - 8


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path``, verified, as it was given to :func:`save_checkpoint`.

    Reads format 3 (safetensors), and an earlier release's ``checkpoint.pt`` (format 2 and
    before). Raises :class:`CheckpointError` (one line) for a file that is not a checkpoint,
    holds anything but tensors and plain data, has a later format, or fails its checksum;
    FileNotFoundError when there is none."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(2, "No such file", str(path)) from None
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r} ({err.strerror})") from None
    if path.suffix == SUFFIX or is_safetensors(data):
        return _load_safetensors(path, data, map_location)
    return _load_legacy(path, data, map_location)


def _corrupt(path: Path, why: object) -> CheckpointError:
    said = " ".join(str(why).split())  # one line, whatever the library said
    return CheckpointError(f"checkpoint {str(path)!r} is corrupt ({said[:200]})")


def _load_safetensors(path: Path, data: bytes, map_location: str | torch.device) -> dict[str, Any]:
    try:
        tensors = safetensors.torch.load(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        metadata = header.get("__metadata__") or {}
    except Exception as err:  # the reader raises its own types on a damaged file
        raise _corrupt(path, err) from None
    written = metadata.get(FORMAT_KEY)
    if written is None:
        raise CheckpointError(f"{str(path)!r} is not a pyro-vae checkpoint (no format in it)")
    if written != str(FORMAT):
        by = str(metadata.get("writer", "another program"))
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format {written[:20]!r}, written by {by[:40]}; "
            f"pyro-vae {__version__} reads format {FORMAT} and earlier: use a later release"
        )
    used: set[str] = set()
    try:
        structure = json.loads(metadata["structure"])
        state = _join(structure, tensors, used)
        if not isinstance(state, dict):
            raise ValueError("its structure is not a dict")
        if used != tensors.keys():
            raise ValueError(f"{len(tensors.keys() - used)} of its tensors have no place in it")
        same = content_digest(state) == metadata.get(DIGEST_KEY)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as err:
        raise _corrupt(path, err) from None
    if not same:
        raise _corrupt(path, "its contents do not match its checksum")
    device = torch.device(map_location)
    if device.type != "cpu":
        state = _join(structure, {k: t.to(device) for k, t in tensors.items()}, set())
    return state


def _load_legacy(path: Path, data: bytes, map_location: str | torch.device) -> dict[str, Any]:
    """An earlier release's checkpoint.pt, read by PyTorch's weights-only unpickler."""
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err) or "weights_only" in str(err).lower():
            what = str(err).split("Unsupported global:")[-1].split(" was not")[0].strip()
            raise CheckpointError(
                f"refused to load {str(path)!r}: it holds Python objects other than tensors "
                f"and plain data ({what[:80]}); loading it could run code, so it is not read"
            ) from None
        raise _corrupt(path, err) from None
    except Exception as err:  # torch.load raises many types on a damaged file
        raise _corrupt(path, err) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(path)!r} is not a pyro-vae checkpoint (no dict inside)")
    if FORMAT_KEY in state or DIGEST_KEY in state:
        try:
            same = content_digest(state) == state.get(DIGEST_KEY)
        except TypeError:
            same = False
        if not same:
            raise _corrupt(path, "its contents do not match its checksum")
    return {k: v for k, v in state.items() if k not in (FORMAT_KEY, DIGEST_KEY)}
