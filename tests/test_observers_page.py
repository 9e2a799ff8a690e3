"""docs/observers.md runs as written: its tracker module is written to a working directory, its
``pyro-vae`` commands run there in order (one epoch each), its Python blocks run in order, and
every line it quotes (``<!-- output: NAME -->``) is a line printed, numbers aside. The commands
and the blocks run in this process, the commands each as a new process would (nothing named
yet)."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from pyro_vae import plugins
from pyro_vae.cli import main
from pyro_vae.training.trackers import TRACKERS

pytest.importorskip("mlflow")

PAGE = Path(__file__).resolve().parent.parent / "docs" / "observers.md"
NUMBER = re.compile(r"[-+]?\d[\d,]*(\.\d+)?(e-?\d+)?")


def _one_epoch(text: str) -> str:
    return re.sub(r"\bepochs=\d+", "epochs=1", re.sub(r"--epochs \d+", "--epochs 1", text))


def _skeleton(line: str) -> str:
    return NUMBER.sub("#", line)


def _quoted(text: str) -> dict[str, list[str]]:
    found = re.findall(r"<!-- output: (\S+) -->\n```text\n(.*?)```", text, flags=re.S)
    return {name: [ln for ln in block.splitlines() if ln != "..."] for name, block in found}


@pytest.fixture
def workdir(tmp_path, monkeypatch, one_thread):
    """A fresh working directory and MLflow's defaults (no setting of the machine); afterwards
    no plug-in is named and the page's tracker is gone."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    plugins._reset_for_tests()
    TRACKERS._entries.pop("print", None)
    sys.modules.pop("my_tracker", None)


def test_the_page_runs_and_prints_what_it_quotes(workdir, capsys):
    text = PAGE.read_text()
    files = re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```", text, flags=re.S)
    for name, source in files:
        (workdir / name).write_text(source)
    printed: dict[str, list[str]] = {}
    commands = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    for command in [c.strip() for block in commands for c in block.splitlines()]:
        plugins._reset_for_tests()
        capsys.readouterr()
        assert main(shlex.split(_one_epoch(command))[1:]) == 0, command
        captured = capsys.readouterr()
        printed[f"$ {command}"] = (captured.err + captured.out).splitlines()
    blocks = re.findall(r"(<!-- file: \S+ -->\n)?```python\n(.*?)```", text, flags=re.S)
    for marker, code in blocks:
        if not marker:
            exec(compile(_one_epoch(code), str(PAGE), "exec"), {"__name__": "__page__"})
    python = capsys.readouterr().out.splitlines()
    for name, quoted in _quoted(text).items():
        lines = python if name.startswith("python") else printed[quoted[0]]
        quoted = quoted if name.startswith("python") else quoted[1:]
        shapes = {_skeleton(line) for line in lines}
        absent = [line for line in quoted if _skeleton(line) not in shapes]
        assert not absent, f"docs/observers.md ({name}): not printed: {absent}; printed {lines}"
