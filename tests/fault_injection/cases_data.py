"""Fault-injection cases, your data by path (``--data``): files whose layout cannot be told,
unreadable or mixed images, counts that are not counts, files that are not what their name
says, paths that are not there, options that do not apply, a streamed run's file changed.
Every bad one exits 2 with one line that names the problem and the fix, no traceback, and
leaves no run directory (or the run it was given as it was)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .cases_input import bad_input
from .harness import Case, Workspace, cli, one_line_error, snapshot

Prepare = Callable[[Path], list[str]]


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _file(name: str, write: Callable[[Path], None]) -> Prepare:
    """A prepare step: ``write`` makes BASE/NAME, which the command reads with --data."""

    def prepare(base: Path) -> list[str]:
        base.mkdir(parents=True, exist_ok=True)
        write(base / name)
        return ["--data", str(base / name)]

    return prepare


def _pngs(sizes: list[tuple[int, int]], corrupt: int | None = None) -> Prepare:
    """A folder of grey PNGs of these (height, width); ``corrupt``: the one cut short."""

    def write(folder: Path) -> None:
        from PIL import Image

        folder.mkdir()
        for i, size in enumerate(sizes):
            pixels = _rng().integers(0, 256, size, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
        if corrupt is not None:
            whole = (folder / f"img{corrupt:02d}.png").read_bytes()
            (folder / f"img{corrupt:02d}.png").write_bytes(whole[:20])

    return _file("images", write)


def _negative_count(path: Path) -> None:
    """A CSV of counts with cell ids and gene names; data row 8, gene g2 holds -1 (row 9 of
    the file, its header being row 1; column 4, the ids being column 1)."""
    counts = _rng().poisson(3, (30, 6))
    counts[7, 2] = -1
    lines = [",".join(["", *(f"g{j}" for j in range(6))])]
    lines += [",".join([f"cell{i}", *map(str, row)]) for i, row in enumerate(counts)]
    path.write_text("\n".join(lines) + "\n")


def _hdf5_not_anndata(path: Path) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f["data"] = np.zeros((4, 4))


def _counts_npy(path: Path) -> None:
    np.save(path, _rng().poisson(3, (40, 10)).astype(np.int64))


AMBIGUOUS = "say which with --layout nchw or --layout nhwc"
COUNTS = ["--likelihood", "poisson"]

BAD_DATA = [
    bad_input(
        "your-data-npz-layout-ambiguous",
        [],
        AMBIGUOUS,
        _file("x.npz", lambda p: np.savez(p, x=_rng().integers(0, 256, (40, 4, 4, 4), np.uint8))),
    ),
    bad_input(
        "your-data-npy-float-layout-ambiguous",
        ["--likelihood", "gaussian", "--binarize", "none"],
        AMBIGUOUS,
        _file("x.npy", lambda p: np.save(p, _rng().random((40, 4, 4, 4), np.float32))),
    ),
    bad_input(
        "your-data-png-folder-one-corrupt",
        [],
        ("img05.png", "remove or replace it, or pass --skip-bad"),
        _pngs([(16, 16)] * 12, corrupt=5),
    ),
    bad_input(
        "your-data-png-folder-mixed-sizes",
        [],
        "images differ in size",
        _pngs([(16, 16), (20, 24)] * 6),
    ),
    bad_input(
        "your-data-csv-negative-count",
        COUNTS,
        "row 9, column 4 ('g2') holds -1",
        _file("counts.csv", _negative_count),
    ),
    bad_input(
        "your-data-h5ad-not-hdf5",
        COUNTS,
        "not an HDF5 file, so not an AnnData .h5ad",
        _file("cells.h5ad", lambda p: p.write_text("cell,gene\n1,2\n")),
    ),
    bad_input(
        "your-data-h5ad-hdf5-not-anndata",
        COUNTS,
        "is HDF5 but not AnnData",
        _file("cells.h5ad", _hdf5_not_anndata),
    ),
    bad_input("your-data-path-missing", ["--data", "/nonexistent.npy"], "does not exist"),
    bad_input(
        "your-data-unknown-kind",
        [],
        "not a kind of data pyro-vae reads",
        _file("data.xyz", lambda p: p.write_text("1 2 3\n")),
    ),
    bad_input(
        "your-data-counts-to-bernoulli",
        [],
        "want --binarize none and a likelihood of their kind",
        _file("counts.npy", _counts_npy),
    ),
    bad_input(
        "your-data-with-builtin-dataset",
        ["--dataset", "mnist-sample"],
        "--data does not apply to --dataset mnist-sample",
        _file("counts.npy", _counts_npy),
    ),
]

TINY = ["--epochs", "1", "--hidden", "8", "--z-dim", "2", "--batch-size", "16", "--no-progress"]


def _nhwc_told_apart(ws: Workspace) -> tuple[str, bool]:
    """32x32 RGB images stored channels-last: only the last axis can hold channels, so the
    layout is told apart without --layout and recorded."""
    base = ws.new_dir("your-data-npz-nhwc")
    images = _rng().integers(0, 256, (40, 32, 32, 3), np.uint8)
    data = _file("rgb.npz", lambda p: np.savez(p, x=images))(base / "input")
    done = cli([*data, *TINY, "--out", str(base / "run")])
    if done.code != 0:
        return f"exit {done.code}: {done.stderr.strip()[-160:]}", False
    record = json.loads((base / "run" / "config.json").read_text())["data_source"]
    ok = record["layout"] == "nhwc" and record["shape"] == [3, 32, 32]
    return f"exit 0: layout {record['layout']}, images {record['shape']}", ok


def _streamed_file_changed(ws: Workspace) -> tuple[str, bool]:
    """A run that streamed its .npy, resumed after one byte of the file changed: refused in
    one line, every file of the run as it was."""
    base = ws.new_dir("your-data-streamed-changed")
    digits = _rng().integers(0, 256, (64, 8, 8), np.uint8)
    data = _file("digits.npy", lambda p: np.save(p, digits))(base / "input")
    out = base / "run"
    stream = ["--stream", "always", "--workers", "0"]
    first = cli([*data, *stream, *TINY, "--out", str(out)])
    if first.code != 0:
        return f"first run: exit {first.code}: {first.stderr.strip()[-160:]}", False
    before = snapshot(out)
    digits[0, 0, 0] ^= 1
    np.save(data[1], digits)
    done = cli(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"])
    kept = snapshot(out) == before
    ok = one_line_error(done, "is not the data this run was trained on") and kept
    return f"exit {done.code}: {done.stderr.strip()[:140]}; files unchanged: {kept}", ok


DATA_CASES = [
    Case("your-data-npz-nhwc-told-apart", "exit 0; layout nhwc and 3x32x32 images recorded",
         _nhwc_told_apart),
    *BAD_DATA,
    Case("your-data-streamed-file-changed",
         "exit 2, one line naming 'is not the data this run was trained on', files unchanged",
         _streamed_file_changed),
]  # fmt: skip
