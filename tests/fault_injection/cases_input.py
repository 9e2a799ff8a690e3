"""Fault-injection cases, bad input: every one exits 2 with one line that names the problem
and the fix, no traceback, and leaves no run directory (or the old one untouched)."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .harness import (
    SMALL,
    Case,
    Workspace,
    cli,
    one_line_error,
    snapshot,
)

# --- bad input: one clear line, exit 2, no traceback, nothing started ------------------------


def bad_input(
    label: str,
    args: list[str],
    needle: str | tuple[str, ...],
    prepare: Callable[[Path], list[str]] | None = None,
) -> Case:
    """``needle``: what the line must name (every one of a tuple)."""
    needles = (needle,) if isinstance(needle, str) else needle

    def run(ws: Workspace) -> tuple[str, bool]:
        out = ws.new_dir(label)
        extra = prepare(out.parent / f"{out.name}-input") if prepare else []
        done = cli([*args, *extra, "--out", str(out), "--no-progress"])
        err = done.stderr.strip()
        ok = (
            done.code == 2
            and all(n in err for n in needles)
            and "\n" not in err
            and "Traceback" not in err
            and not out.exists()
        )
        return f"exit {done.code}: {err[:160]}", ok

    named = " and ".join(f"'{n}'" for n in needles)
    return Case(label, f"exit 2, one line naming {named}, no run directory", run)


def _npz(**arrays: np.ndarray) -> Callable[[Path], list[str]]:
    def prepare(base: Path) -> list[str]:
        base.mkdir(parents=True, exist_ok=True)
        path = base / "data.npz"
        np.savez(path, **arrays)
        return ["--dataset", "npz", "--data-dir", str(path)]

    return prepare


IDX_STEMS = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def _garbage_idx(base: Path) -> list[str]:
    base.mkdir(parents=True, exist_ok=True)
    for stem in IDX_STEMS:
        (base / stem).write_bytes(b"\x00\x00\x08\x03garbage")
    return ["--dataset", "mnist", "--data-dir", str(base)]


_grey = np.random.default_rng(0).random((64, 28, 28)).astype(np.float32)
_nan = _grey.copy()
_nan[3, 10, 10] = np.nan

BAD_INPUT = [
    bad_input("unknown-dataset", ["--dataset", "cifar"], "choose one of: auto, mnist-sample"),
    bad_input("unknown-likelihood", ["--likelihood", "bernouli"], "continuous-bernoulli"),
    bad_input("unknown-prior", ["--prior", "gauss"], "normal, learned-normal, mixture"),
    bad_input("unknown-estimator", ["--estimator", "iwa"], "trace, mean-field"),
    bad_input("unknown-network", ["--network", "resnet"], "mlp, conv"),
    bad_input("grey-levels-to-bernoulli", ["--binarize", "none"], "--binarize dynamic|static"),
    bad_input(
        "nan-in-data",
        ["--likelihood", "gaussian", "--binarize", "none"],
        "NaN",
        _npz(train_x=_nan, test_x=_grey[:8]),
    ),
    bad_input(
        "wrong-shape-for-conv",
        ["--network", "conv"],
        "28x28",
        _npz(train_x=np.zeros((8, 16, 16), np.uint8), test_x=np.zeros((4, 16, 16), np.uint8)),
    ),
    bad_input(
        "missing-data-dir",
        ["--dataset", "mnist", "--data-dir", "/nonexistent/mnist"],
        "does not exist",
    ),
    bad_input("unreadable-data-dir", [], "cannot read", _garbage_idx),
    bad_input("beta-negative", ["--beta", "-0.5"], "--beta must be >= 0"),
    bad_input("particles-zero", ["--particles", "0"], "--particles must be >= 1"),
    bad_input("lr-zero", ["--lr", "0"], "--lr must be > 0"),
    bad_input("z-dim-zero", ["--z-dim", "0"], "--z-dim must be >= 1"),
    bad_input("batch-size-zero", ["--batch-size", "0"], "--batch-size must be >= 1"),
]
if not torch.cuda.is_available():
    BAD_INPUT.append(bad_input("cuda-without-gpu", ["--device", "cuda"], "no CUDA GPU"))


def _truncated_npz(base: Path) -> list[str]:
    _npz(train_x=_grey, test_x=_grey[:8])(base)
    whole = (base / "data.npz").read_bytes()
    (base / "data.npz").write_bytes(whole[: len(whole) // 2])
    return ["--dataset", "npz", "--data-dir", str(base / "data.npz")]


GREY = ["--likelihood", "gaussian", "--binarize", "none"]
_words = np.array([["ink"] * 784] * 8)
BAD_INPUT += [
    bad_input("npz-string-dtype", GREY, "must be numbers", _npz(train_x=_words, test_x=_words)),
    bad_input("npz-no-images", GREY, "holds no images", _npz(train_x=_grey[:0], test_x=_grey[:8])),
    bad_input("npz-truncated", GREY, "cannot read", _truncated_npz),
    bad_input(
        "npz-labels-short-of-images",
        GREY,
        "one label per image",
        _npz(train_x=_grey, test_x=_grey[:8], train_y=np.zeros(3, np.int64)),
    ),
    bad_input(
        "npz-outside-the-likelihood-support",
        ["--likelihood", "continuous-bernoulli", "--binarize", "none"],
        "needs values in [0, 1]",
        _npz(train_x=-_grey, test_x=_grey[:8]),
    ),
    bad_input("lr-infinite", ["--lr", "inf"], "--lr must be a finite number"),
    bad_input("kl-warmup-infinite", ["--kl-warmup-epochs", "inf"], "must be a finite number"),
    bad_input(
        "capacity-epochs-infinite",
        ["--estimator", "capacity", "--capacity-epochs", "inf"],
        "must be a finite number",
    ),
    bad_input("seed-negative", ["--seed", "-1"], "--seed must be in [0, 2**32)"),
]


def _idx_truncated_gz(ws: Workspace) -> tuple[str, bool]:
    """A cut-short .gz: one line, and no half-unpacked file left in the cache."""
    base, cache = ws.new_dir("idx-gz"), ws.new_dir("idx-cache")
    base.mkdir()
    for stem in IDX_STEMS:
        whole = gzip.compress(np.random.default_rng(0).bytes(4000))
        (base / f"{stem}.gz").write_bytes(whole[: len(whole) // 2])
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        done = cli(["--dataset", "mnist", "--data-dir", str(base), "--out", str(base / "run")])
    finally:
        if previous is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = previous
    # (matplotlib keeps its font list under the same cache directory: not ours to count)
    left = [p.name for p in cache.rglob("*") if p.is_file() and "matplotlib" not in p.parts]
    ok = one_line_error(done, "is the file whole?") and not left and not (base / "run").exists()
    return f"exit {done.code}: {done.stderr.strip()[:120]}; cache files left: {left}", ok


def _empty_out(ws: Workspace) -> tuple[str, bool]:
    done = cli(["--out", "", *SMALL])
    return f"exit {done.code}: {done.stderr.strip()[:120]}", one_line_error(done, "--out must be")


def _command_input(label: str, args: list[str], needle: str, change: str = "") -> Case:
    """A command on a copy of a trained run (RUN in ``args``; ``change``: NAME=CONTENT, a
    file to replace first), refused in one line with every file as it was."""

    def run(ws: Workspace) -> tuple[str, bool]:
        out = ws.copy_of_trained(label)
        if change:
            name, content = change.split("=", 1)
            (out / name).write_text(content)
        before = snapshot(out)
        done = cli([str(out) if a == "RUN" else a for a in args])
        kept = snapshot(out) == before
        ok = one_line_error(done, needle) and kept
        return f"exit {done.code}: {done.stderr.strip()[:140]}; files unchanged: {kept}", ok

    return Case(label, f"exit 2, one line naming '{needle}', files unchanged", run)


COMMAND_INPUT = [
    _command_input("evaluate-max-images-negative", ["evaluate", "RUN", "--max-images", "-5"],
                   "--max-images must be >= 1"),
    _command_input("evaluate-max-images-zero", ["evaluate", "RUN", "--max-images", "0"],
                   "--max-images must be >= 1"),
    _command_input("sample-num-beyond-range", ["sample", "RUN", "--num", "100000000"],
                   "--num must be in [1, 10000]"),
    _command_input("config-a-list-on-resume", ["train", "--resume", "--out", "RUN"],
                   "not a run's config", change="config.json=[]"),
    _command_input("config-a-list-on-report", ["report", "RUN"], "not a run's config",
                   change="config.json=[]"),
    _command_input("config-wrong-type-on-report", ["report", "RUN"],
                   "--z-dim must be a whole number", change='config.json={"z_dim": "four"}'),
    _command_input("metrics-not-a-table-on-report", ["report", "RUN", "--refresh-figures"],
                   "is not a metrics table", change="metrics.csv=epoch,test_neg_elbo\n1,lots\n"),
]  # fmt: skip


def _debug_traceback(ws: Workspace) -> tuple[str, bool]:
    done = cli(["--debug", "train", "--beta", "-1", "--out", str(ws.new_dir("debug"))])
    ok = done.code != 0 and "Traceback" in done.stderr and "ConfigError" in done.stderr
    return f"exit {done.code}, traceback {'shown' if 'Traceback' in done.stderr else 'absent'}", ok


INPUT_CASES = [
    *BAD_INPUT,
    Case("idx-truncated-gz", "exit 2 'is the file whole?'; nothing left in the cache",
         _idx_truncated_gz),
    Case("out-empty", "exit 2, one line naming '--out must be'", _empty_out),
    *COMMAND_INPUT,
    Case("debug-shows-traceback", "--debug: a traceback instead of one line", _debug_traceback),
]  # fmt: skip
