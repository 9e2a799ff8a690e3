"""The command line answers at once: ``import pyro_vae`` imports none of the package's heavy
dependencies, ``pyro-vae --version`` not even torch, and ``pyro-vae train --help`` neither
Dynamo, Inductor, TensorBoard nor matplotlib; the public names still arrive, on first use.
Each check runs in a fresh interpreter (``-X importtime`` lists every module it imported), so
that what this process has already imported cannot hide an import."""

from __future__ import annotations

import atexit
import gc
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pyro_vae

ROOT = Path(__file__).resolve().parent.parent
# what no command imports before it needs it: compilers, loggers, plotting, search, the
# benchmark's NumPyro path (each costs from a tenth of a second to over one)
HEAVY = (
    "torch._dynamo",
    "torch._inductor",
    "tensorboard",
    "torch.utils.tensorboard",
    "matplotlib",
    "scipy.optimize",
    "jax",
    "numpyro",
    "optuna",
    "mlflow",
)


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -X importtime ARGS`` in a fresh interpreter, from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    cmd = [sys.executable, "-X", "importtime", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def _imported(stderr: str) -> set[str]:
    """The modules that ``-X importtime`` reports imported."""
    lines = [line.split("|") for line in stderr.splitlines() if line.startswith("import time:")]
    return {cells[-1].strip() for cells in lines if len(cells) == 3} - {"imported package"}


def _heavy(modules: set[str], names: tuple[str, ...] = HEAVY) -> list[str]:
    """Those of ``modules`` that are one of ``names`` or inside one."""
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_importing_the_package_imports_nothing_heavy():
    done = _python("-c", "import pyro_vae")
    assert done.returncode == 0, done.stderr
    modules = _imported(done.stderr)
    assert "pyro_vae" in modules
    assert not _heavy(modules, (*HEAVY, "torch", "pyro"))


def test_the_version_imports_no_torch():
    done = _python("-m", "pyro_vae", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"pyro-vae {pyro_vae.__version__}\n"
    assert not _heavy(_imported(done.stderr), (*HEAVY, "torch", "pyro"))


@pytest.mark.parametrize(
    "argv",
    [["--debug", "--version"], ["--vers"], ["--version", "train"]],
    ids=lambda a: " ".join(a),
)
def test_the_version_is_answered_where_the_parser_would_answer_it(argv, capsys):
    from pyro_vae.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"pyro-vae {pyro_vae.__version__}\n"


@pytest.mark.parametrize("argv", [["--help", "--version"], ["train", "--version"]])
def test_a_version_flag_after_help_or_a_command_is_the_parser_s(argv, capsys):
    from pyro_vae.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    out, err = capsys.readouterr()
    if argv[0] == "--help":  # the help, as before
        assert stop.value.code == 0 and out.startswith("usage: pyro-vae")
    else:  # train has no --version
        assert stop.value.code == 2 and "unrecognized arguments: --version" in err


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_command_s_help_imports_no_compiler_logger_or_plotting(command):
    done = _python("-m", "pyro_vae", command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: pyro-vae {command}")
    assert not _heavy(_imported(done.stderr))


def test_a_parse_that_ends_the_process_skips_the_last_collection(monkeypatch, capsys):
    """Help and usage errors freeze what is alive at exit (once, however many), so that the
    interpreter's last garbage collection does not walk torch's objects."""
    from pyro_vae.cli.help import CommandParser

    at_exit: list[object] = []
    monkeypatch.setattr(atexit, "register", at_exit.append)
    monkeypatch.setattr(atexit, "unregister", lambda f: at_exit.remove(f) if f in at_exit else 0)
    p = CommandParser(prog="pyro-vae")
    p.add_argument("--num", type=int)
    assert p.parse_args(["--num", "3"]).num == 3 and at_exit == []
    for argv in (["--help"], ["--num", "x"]):
        with pytest.raises(SystemExit):
            p.parse_args(argv)
    assert at_exit == [gc.freeze]
    capsys.readouterr()


def test_the_public_names_arrive_on_first_use():
    code = """if True:
        import sys
        import pyro_vae
        assert "torch" not in sys.modules
        assert set(pyro_vae.__all__) <= set(dir(pyro_vae)), "dir() before first use"
        assert "torch" not in sys.modules
        from pyro_vae.model import VAE
        assert pyro_vae.VAE is VAE and "VAE" in vars(pyro_vae)  # kept after the first use
        from pyro_vae.workflow import train
        assert pyro_vae.train is train
        print(sorted(m for m in sys.modules if m.startswith(("torch._dynamo", "matplotlib"))))
    """
    done = _python("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


def test_every_public_name_is_there_and_an_unknown_one_is_not():
    assert len(set(pyro_vae.__all__)) == len(pyro_vae.__all__)
    namespace: dict[str, object] = {}
    exec("from pyro_vae import *", namespace)
    assert set(pyro_vae.__all__) <= set(namespace)
    assert all(namespace[name] is getattr(pyro_vae, name) for name in pyro_vae.__all__)
    assert set(pyro_vae.__all__) <= set(dir(pyro_vae))
    with pytest.raises(AttributeError, match="^module 'pyro_vae' has no attribute 'no_such'$"):
        pyro_vae.no_such  # noqa: B018
    assert not hasattr(pyro_vae, "_no_such")
    assert pyro_vae.training.TrainConfig is pyro_vae.TrainConfig  # a subpackage, as before


def test_only_the_cuda_home_notice_of_cpp_extension_is_dropped(caplog):
    from pyro_vae.inference.graph_compiler import quiet_cuda_home_notice

    quiet_cuda_home_notice()
    quiet_cuda_home_notice()  # once is enough; twice changes nothing
    log = logging.getLogger("torch.utils.cpp_extension")
    with caplog.at_level(logging.WARNING):
        log.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local/cuda")
        log.warning("Error checking compiler version for %s", "c++")
    assert [r.getMessage() for r in caplog.records] == ["Error checking compiler version for c++"]


def test_inductor_s_import_of_cpp_extension_says_nothing_about_cuda(tmp_path):
    """What Inductor's CPU compile imports, with a CUDA toolkit in CUDA_HOME: on a CUDA build
    of torch with no GPU, torch says it found no CUDA runtime, unless the notice is dropped."""
    code = """if True:
        import sys
        import torch
        from pyro_vae.inference.graph_compiler import quiet_cuda_home_notice
        if sys.argv[1] == "quiet":
            quiet_cuda_home_notice()
        import torch.utils.cpp_extension
        print(bool(torch.version.cuda) and not torch.cuda.is_available())
    """
    env = {"CUDA_HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    runs = {}
    for how in ("quiet", "as-is"):
        cmd = [sys.executable, "-c", code, how]
        done = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT, timeout=300
        )
        assert done.returncode == 0, done.stderr
        runs[how] = done
    assert "No CUDA runtime" not in runs["quiet"].stderr
    if runs["as-is"].stdout.strip() == "True":  # where torch says it at all: the test sees it
        assert "No CUDA runtime is found" in runs["as-is"].stderr
