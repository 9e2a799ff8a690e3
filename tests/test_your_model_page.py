"""docs/your-model.md runs as written: its module is written to a working directory, its
``pyro-vae`` commands run there in order (with fewer epochs, samples and images), its Python
blocks run as one script, and every line it quotes (``<!-- output: NAME -->``) is a line the
tool prints, numbers, hashes and the working directory aside.

The commands run in this process, each as a new process would (nothing named yet), which saves
a start of Python and torch per command; the Python blocks run in a process of their own."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_vae import LIKELIHOODS, MODELS, PRIORS, plugins
from pyro_vae.cli import main
from pyro_vae.training import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "your-model.md"
HOME = "/home/you/work"  # the page's working directory, where the test's is printed

# the page's settings, and the test's: one epoch, a few samples on a few images
SMALLER = [
    (r"--epochs \d+", "--epochs 1"),
    (r"--num-samples \d+", "--num-samples 20"),
    (r"--max-images \d+", "--max-images 50"),
    (r"--max-eval-images \d+", "--max-eval-images 50"),
    (r"--ais-steps \d+", "--ais-steps 5"),
    (r"\bepochs=\d+", "epochs=1"),
    (r"\bnum_samples=\d+", "num_samples=20"),
    (r"\bmax_images=\d+", "max_images=50"),
    (r"\bnum_steps=\d+", "num_steps=5"),
]


def _smaller(text: str) -> str:
    for pattern, small in SMALLER:
        text = re.sub(pattern, small, text)
    return text


def _files(text: str) -> dict[str, str]:
    """The files the page writes: a python block after ``<!-- file: NAME -->``."""
    return dict(re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```", text, flags=re.S))


def _python(text: str) -> str:
    """The page's other Python blocks, one script."""
    blocks = re.findall(r"(<!-- file: \S+ -->\n)?```python\n(.*?)```", text, flags=re.S)
    return "\n".join(code for marker, code in blocks if not marker)


def _commands(text: str) -> list[str]:
    """The ``pyro-vae`` commands of the page's bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [" ".join(line.split()) for line in lines if line.startswith("pyro-vae ")]


def _outputs(text: str) -> dict[str, list[str]]:
    """The quoted outputs, NAME -> lines (``...`` stands for lines left out)."""
    found = re.findall(r"<!-- output: (\S+) -->\n```text\n(.*?)```", text, flags=re.S)
    return {name: [ln for ln in block.splitlines() if ln != "..."] for name, block in found}


HASH = re.compile(r"\b[0-9a-f]{8,64}\b")
NUMBER = re.compile(r"[-+]?\d[\d,]*(\.\d+)?(e-?\d+)?")


def _skeleton(line: str) -> str:
    return NUMBER.sub("#", HASH.sub("HASH", line))


def _absent(quoted: list[str], printed: list[str]) -> list[str]:
    shapes = {_skeleton(line) for line in printed}
    return [line for line in quoted if _skeleton(line) not in shapes]


class Place:
    """The page's working directory; commands run in it as new processes would."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture) -> None:
        self.root, self.capsys = root, capsys
        self.home = str(root.resolve())

    def run(self, command: str) -> tuple[int, list[str]]:
        plugins._reset_for_tests()  # nothing named yet, and no factory registered
        for name in [m for m in MODELS if ":" in m]:
            del MODELS._entries[name]
        self.capsys.readouterr()
        try:
            status = main(shlex.split(_smaller(command))[1:])
        except SystemExit as stop:  # argparse
            status = stop.code
        captured = self.capsys.readouterr()
        printed = (captured.err + captured.out).replace(self.home, HOME)
        return status, printed.splitlines()


@pytest.fixture
def place(tmp_path, monkeypatch, capsys, one_thread):
    """A fresh working directory; afterwards the registries hold what they held before and the
    page's module is forgotten."""
    registries = (LIKELIHOODS, PRIORS, MODELS)
    saved = [dict(r._entries) for r in registries]
    monkeypatch.chdir(tmp_path)
    yield Place(tmp_path, capsys)
    plugins._reset_for_tests()
    for registry, entries in zip(registries, saved, strict=True):
        registry._entries.clear()
        registry._entries.update(entries)
    for name in _files(PAGE.read_text()):
        sys.modules.pop(Path(name).stem, None)


def test_the_page_runs_and_prints_what_it_quotes(place):
    text = PAGE.read_text()
    for name, source in _files(text).items():
        (place.root / name).write_text(source)
    _check_commands(place, text)
    _check_python(place, text)


def _check_commands(place: Place, text: str) -> None:
    """Every command of the bash blocks runs (status 0), in the page's order; then every
    quoted command not among them (a refusal: status 2); each prints the lines quoted."""
    printed = {}
    for command in _commands(text):
        status, lines = place.run(command)
        assert status == 0, f"{command}\n" + "\n".join(lines[-5:])
        printed[command] = lines
    for name, quoted in _outputs(text).items():
        if name.startswith("python"):
            continue
        command = quoted[0].removeprefix("$ ")
        refused = any(line.startswith("pyro-vae: error:") for line in quoted)
        if command not in printed:
            status, printed[command] = place.run(command)
            assert status == (2 if refused else 0), (name, printed[command])
        absent = _absent(quoted[1:], printed[command])
        assert not absent, (
            f"docs/your-model.md ({name}) quotes lines the tool does not print: {absent}; "
            f"it printed {printed[command]}"
        )
    assert not (place.root / "runs" / "x").exists()  # a refused command writes nothing


def _check_python(place: Place, text: str) -> None:
    """The Python blocks, one script in a process of its own, print the lines quoted."""
    script = place.root / "page.py"
    script.write_text(_smaller(_python(text)))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600,
        cwd=place.root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    quoted = [line for name, lines in _outputs(text).items() if name.startswith("python")
              for line in lines]  # fmt: skip
    assert [_skeleton(line) for line in out] == [_skeleton(line) for line in quoted], out
    assert "scale of z in the model 4.0, in the guide 4.0; of x 1.0" in out  # beta = 4
    given, by_name = (line.split()[-1] for line in out[:2])  # vae= and model=: the same run
    assert given == by_name, out[:2]
    bounds = re.search(r"ELBO (\S+) <= log p\(x\) (\S+) nats", done.stdout)
    assert float(bounds[1]) < float(bounds[2])


def test_the_record_the_page_shows_is_the_one_a_run_writes():
    """The page's config.json excerpt has the keys a run writes, its plug-in record the fields
    of :meth:`pyro_vae.plugins.Plugin.record`, and the sha256 of the page's module (which the
    refusal it quotes abbreviates)."""
    text = PAGE.read_text()
    shown = json.loads(re.search(r"```json\n(.*?)```", text, flags=re.S).group(1))
    assert set(shown) <= {f.name for f in dataclasses.fields(TrainConfig)}
    [record] = shown["plugins"]
    assert set(record) == {f.name for f in dataclasses.fields(plugins.Plugin)}
    source = _files(text)[record["spec"]]
    assert record["sha256"] == hashlib.sha256(source.encode()).hexdigest()
    assert f"sha256 {record['sha256'][:8]})" in "\n".join(_outputs(text)["not-named"])


def test_every_quoted_command_is_run():
    """Each quoted output belongs to a command of a bash block, or is a refusal the test runs."""
    text = PAGE.read_text()
    commands = _commands(text)
    for name, quoted in _outputs(text).items():
        if name.startswith("python"):
            continue
        assert quoted[0].startswith("$ pyro-vae "), name
        command = quoted[0].removeprefix("$ ")
        refused = any(line.startswith("pyro-vae: error:") for line in quoted)
        assert command in commands or refused, f"{name}: {command} is in no bash block"
