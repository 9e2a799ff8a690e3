"""docs/data.md runs as written: the example files it reads are made in a working directory,
its ``pyro-vae`` commands run there in order (with fewer epochs and samples), its Python block
runs, and every line it quotes (``<!-- output: NAME -->``) is a line the tool prints, numbers,
hashes and the working directory aside; every refusal it quotes is one line, exit status 2.

The page's helpers are those of ``tests/test_your_model_page.py``: commands run in this
process as a new process would, and the page's working directory stands for the test's."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_your_model_page import HOME, Place, _absent, _commands, _outputs, _smaller

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "data.md"
FAST = " --no-tensorboard"  # the test's: a run's TensorBoard images are not what it checks
REFUSED = "pyro-vae: error:"


# --- the page's example files ------------------------------------------------------------------


def make_examples(root: Path) -> None:
    """The files the page reads, as it describes them (seeded: the same files every time)."""
    rng = np.random.default_rng(0)
    _shapes(root / "shapes", rng)
    _photos(root / "photos.npy", rng)
    counts, kinds = _cells(rng)
    _h5ad(root / "cells.h5ad", counts)
    ids = [f"cell{i:03d}" for i in range(len(counts))]
    lines = [",type," + ",".join(f"gene{j}" for j in range(counts.shape[1]))]
    for cell, kind, row in zip(ids, kinds, counts, strict=True):
        lines.append(f"{cell},{kind}," + ",".join(map(str, row)))
    (root / "cells.csv").write_text("\n".join(lines) + "\n")
    np.save(root / "stack.npy", rng.integers(0, 256, (100, 2, 32, 32), dtype=np.uint8))
    (root / "mixed").mkdir()
    for i, size in enumerate([(32, 32), (40, 30), (32, 32)]):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "mixed" / f"{i}.jpg")
    (root / "downloads").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            root / "downloads" / f"{i}.png"
        )
    (root / "downloads" / "3.png").write_text("<html>Not found</html>")  # a saved error page
    (root / "notes.md").write_text("# notes\n")


def _shapes(folder: Path, rng: np.random.Generator) -> None:
    """300 PNGs, 32x32 RGB: a disc, a square or stripes of one colour on another."""
    for kind in ("circles", "squares", "stripes"):
        (folder / kind).mkdir(parents=True)
        for i in range(100):
            back, fore = (tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(2))
            im = Image.new("RGB", (32, 32), back)
            draw = ImageDraw.Draw(im)
            r, cx, cy = (int(v) for v in rng.integers([6, 10, 10], [12, 22, 22]))
            if kind == "circles":
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fore)
            elif kind == "squares":
                draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fore)
            else:
                for x in range(int(rng.integers(0, 4)), 32, 6):
                    draw.rectangle((x, 0, x + 2, 31), fill=fore)
            im.save(folder / kind / f"{i:03d}.png")


def _photos(path: Path, rng: np.random.Generator) -> None:
    """500 crops of the two sample photographs, 32x32 RGB, stored channels-last (N, H, W, C)."""
    from pyro_vae.data.patches import sample_photos

    photos = sample_photos().numpy()  # (2, 427, 640, 3) uint8
    which = rng.integers(0, 2, 500)
    top, left = rng.integers(0, 427 - 32, 500), rng.integers(0, 640 - 32, 500)
    crops = [photos[p, t : t + 32, x : x + 32] for p, t, x in zip(which, top, left, strict=True)]
    np.save(path, np.stack(crops))


def _cells(rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """300 cells x 40 genes of negative-binomial counts, three cell types."""
    kinds = np.array(["B", "T", "NK"])[rng.integers(0, 3, 300)]
    profile = {k: rng.dirichlet(np.full(40, 0.5)) for k in ("B", "T", "NK")}
    library = rng.lognormal(np.log(200), 0.3, 300)
    mean = np.stack([profile[k] for k in kinds]) * library[:, None]
    counts = rng.negative_binomial(5, 5 / (5 + mean))
    return counts.astype(np.int64), list(kinds)


def _h5ad(path: Path, counts: np.ndarray) -> None:
    """An AnnData file: log-normalised values in X, the counts (CSR) in the layer counts."""
    import anndata
    import scipy.sparse

    cells = anndata.AnnData(
        X=np.log1p(counts).astype(np.float32),
        layers={"counts": scipy.sparse.csr_matrix(counts.astype(np.float32))},
    )
    cells.obs_names = [f"cell{i:03d}" for i in range(len(counts))]
    cells.var_names = [f"gene{j}" for j in range(counts.shape[1])]
    cells.write_h5ad(path)


# --- the page, run ---------------------------------------------------------------------------


@pytest.fixture
def place(tmp_path, monkeypatch, capsys):
    """The page's working directory with its files; image-patches cut smaller (200 training
    and 40 test patches: the same photographs, places and pixels, fewer of them), and no
    figures drawn at the end of a run: the page shows none, and for the discretized logistic
    (whose mean sums over the 256 levels of every pixel) they would take most of the test's
    time (tests/report/ draws figures)."""
    from pyro_vae import plugins
    from pyro_vae.data import patches
    from pyro_vae.report import observer

    monkeypatch.setattr(patches, "TRAIN_PER_PHOTO", 100)
    monkeypatch.setattr(patches, "TEST_PER_PHOTO", 20)
    monkeypatch.setattr(observer, "make_figures", lambda *args, **kwargs: None)
    monkeypatch.chdir(tmp_path)
    make_examples(tmp_path)
    yield Place(tmp_path, capsys)
    plugins._reset_for_tests()


def _python(text: str) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))


def _correct_a_count(path: Path) -> None:
    """One count of the table's last row changed, its size kept (what the page's refusal
    follows)."""
    raw = path.read_text()
    last = raw.rstrip("\n")[-1]
    path.write_text(raw.rstrip("\n")[:-1] + str((int(last) + 1) % 10) + "\n")


def test_the_page_runs_and_prints_what_it_quotes(place):
    text = PAGE.read_text()
    printed = {}
    for command in _commands(text):  # in the page's order
        ran = command + FAST if command.startswith("pyro-vae train ") else command
        status, lines = place.run(ran)
        assert status == 0, f"{command}\n" + "\n".join(lines[-5:])
        printed[command] = lines
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_smaller(_python(text)), "docs/data.md", "exec"), {"__name__": "page"})
    outputs = _outputs(text)
    said = out.getvalue().replace(place.home, HOME).splitlines()
    assert not _absent(outputs["python"], said) and len(said) == len(outputs["python"]), said
    for name, quoted in outputs.items():
        if name == "python":
            continue
        command = quoted[0].removeprefix("$ ")
        if command not in printed:  # a refusal
            if name == "changed":
                _correct_a_count(place.root / "cells.csv")
            status, printed[command] = place.run(command)
            assert status == 2 and len(printed[command]) == 1, (name, printed[command])
            assert printed[command][0].startswith(REFUSED), (name, printed[command])
        absent = _absent(quoted[1:], printed[command])
        assert not absent, (
            f"docs/data.md ({name}) quotes lines the tool does not print: {absent}; "
            f"it printed {printed[command]}"
        )
    assert not (place.root / "runs" / "x").exists()  # a refused command writes nothing
    _check_records(place.root, text)


def _check_records(root: Path, text: str) -> None:
    """The record the page shows is the one runs/shapes wrote (its hash and size aside, which
    depend on the files' times and the PNG encoder); summary.json has what the page says."""
    shown = json.loads(re.search(r"```json\n(.*?)```", text, flags=re.S).group(1))
    record = json.loads((root / "runs" / "shapes" / "config.json").read_text())["data_source"]
    record["path"] = record["path"].replace(str(root.resolve()), HOME)
    varying = {"sha256", "bytes"}
    assert set(shown) == set(record)
    assert {k: v for k, v in shown.items() if k not in varying} == {
        k: v for k, v in record.items() if k not in varying
    }
    summary = json.loads((root / "runs" / "shapes" / "summary.json").read_text())
    assert summary["data"] == {"read": "device"} and summary["test_bits_per_dim"] > 0
    streamed = json.loads((root / "runs" / "photos" / "summary.json").read_text())["data"]
    assert set(streamed) == {"read", "workers", "data_wait_share"}, streamed
    assert streamed["read"] == "stream" and streamed["workers"] == 0  # (a memory map)


def test_every_quoted_command_is_run_or_refused():
    """Each quoted output belongs to a command of a bash block, or is a one-line refusal."""
    text = PAGE.read_text()
    commands = _commands(text)
    for name, quoted in _outputs(text).items():
        if name == "python":
            continue
        assert quoted[0].startswith("$ pyro-vae "), name
        command = quoted[0].removeprefix("$ ")
        refused = len(quoted) == 2 and quoted[1].startswith(REFUSED)
        assert command in commands or refused, f"{name}: {command} is in no bash block"
