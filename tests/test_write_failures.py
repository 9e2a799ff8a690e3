"""The run's directories get the usual permissions, as its files do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyro_vae.cli import main
from pyro_vae.training import run_dir as runs
from pyro_vae.training.files import _UMASK, replace_directory
from pyro_vae.training.tensorboard import summary_writer

TINY = ["--epochs", "1", "--hidden", "16", "--z-dim", "2", "--no-progress"]


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    """A run of one epoch, figures and TensorBoard log included, made under umask 022."""
    out = tmp_path_factory.mktemp("written") / "run"
    old = os.umask(0o022)
    try:
        assert main(["train", *TINY, "--out", str(out)]) == 0
    finally:
        os.umask(old)
    return out


# --- permissions ---------------------------------------------------------------------------------


def test_a_runs_directories_and_files_have_the_usual_permissions(one_epoch):
    """Made under umask 022: directories 0755, files 0644 (as the umask of the process at
    import has it), figures/ included."""
    assert one_epoch.stat().st_mode & 0o777 == 0o755
    for directory in (runs.FIGURES, runs.TENSORBOARD):
        assert (one_epoch / directory).stat().st_mode & 0o777 == 0o755, directory
    files = [p for p in one_epoch.rglob("*") if p.is_file()]
    assert len(files) > 10
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o666 & ~_UMASK, p


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=oct)
def test_directories_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        run_dir = runs.RunDirectory(tmp_path / "run")
        with run_dir.lock("train"):
            run_dir.replace_figures(lambda d: (d / "a.png").write_bytes(b"png"))
            replace_directory(run_dir / "figures", lambda d: (d / "b.png").write_bytes(b"png"))
            writer = summary_writer(run_dir / runs.TENSORBOARD)
            writer.close()
    finally:
        os.umask(old)
    for directory in (run_dir.path, run_dir / runs.FIGURES, run_dir / runs.TENSORBOARD):
        assert directory.stat().st_mode & 0o777 == 0o777 & ~umask, directory
    assert [p.name for p in (run_dir / runs.FIGURES).iterdir()] == ["b.png"]
