"""The user's model in the whole pipeline, from the command line: a module of the user's own
parts (a Student-t prior and likelihood with options of their own, a conv decoder, a factory)
trains with ``--plugin`` and ``--model FILE.py:FACTORY``, is recorded in the run, is checked
against Pyro's own objective, and is evaluated, reported and sampled when named again. A run
read without its module, or edited to name another, is refused in one line, with nothing
written and nothing imported; a SIGKILLed run of a factory model resumes bit for bit."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from user_parts_source import (
    EVIL,
    command,
    files_and_times,
    run_command,
    subprocess_env,
    workspace,
)

from pyro_vae.cli import main
from pyro_vae.training.checkpoint import load_checkpoint
from pyro_vae.training.run_dir import read_metrics

TINY = ["--z-dim", "2", "--batch-size", "500", "--epochs", "1", "--no-tensorboard"]
QUIET = ["--no-progress"]
EVALUATE_IS = ["--num-samples", "10", "--max-images", "20", "--no-progress"]
EVALUATE_AIS = ["--method", "ais", "--ais-steps", "10", "--chains", "2", "--max-images", "20"]
CHECKPOINTS = ("checkpoint.safetensors", "checkpoint.pt")  # whichever the package writes
TIMING = {"train_seconds", "eval_seconds"}


@dataclass
class Made:
    """Two runs of the user's parts, trained once for the module: ``lik`` with the plug-in's
    likelihood and prior chosen by name, ``factory`` built by ``--model FILE.py:make``."""

    root: Path
    tag: str
    parts: str  # the module's file name, as --plugin takes it
    likelihood: str
    printed: dict[str, str]  # what each training printed


def _cli(*args: str) -> tuple[int, str, str]:
    """``pyro-vae ARGS`` in this process: its exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


def _error_line(err: str) -> str:
    """The one error line a refused command printed (no traceback, nothing else but torch's
    own log lines of a process starting up)."""
    lines = [ln for ln in err.strip().splitlines() if not re.match(r"[IWE]\d{4} ", ln)]
    assert len(lines) == 1, err
    assert lines[0].startswith("pyro-vae: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Made:
    root = tmp_path_factory.mktemp("made")
    with pytest.MonkeyPatch.context() as mp, workspace(root) as ws:
        mp.chdir(root)
        parts = ws.parts()
        printed = {}
        for name, flags in {
            "lik": f"--plugin {parts} --likelihood {ws.likelihood} --df 5 --prior student-t "
            "--prior-df 6 --hidden 16".split(),
            "factory": ["--model", f"{parts}:make", "--channels", "3"],
        }.items():
            code, out, err = _cli("train", *flags, *TINY, *QUIET, "--out", name)
            assert code == 0, err
            printed[name] = out
    return Made(root, ws.tag, parts, ws.likelihood, printed)


@pytest.fixture
def here(made, tmp_path, monkeypatch):
    """A copy of the made runs and the user's module, as if made here (their records name the
    copy's file), the working directory (and on sys.path, so that a module written here would
    import if anything tried); the module and what it registers are forgotten afterwards."""
    work = tmp_path / "work"
    shutil.copytree(made.root, work, ignore=shutil.ignore_patterns("__pycache__"))
    for run in ("lik", "factory"):
        config = json.loads((work / run / "config.json").read_text())
        config["plugins"][0]["path"] = str((work / made.parts).resolve())
        (work / run / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))
    with workspace(work, tag=made.tag) as ws:
        yield ws


def _snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {
        k: v
        for k, v in files_and_times(directory).items()
        if "__pycache__" not in k and not k.endswith(".pyc")
    }


# --- training records the user's code -----------------------------------------------------


def test_a_plugins_parts_train_by_name_and_the_run_records_them(made):
    config = json.loads((made.root / "lik" / "config.json").read_text())
    assert (config["likelihood"], config["prior"]) == (made.likelihood, "student-t")
    assert config["part_options"] == {"df": 5.0, "prior_df": 6.0}
    source = (made.root / made.parts).read_bytes()
    [record] = config["plugins"]
    assert record["spec"] == made.parts and record["kind"] == "file"
    assert record["module"] == made.parts.removesuffix(".py")
    assert record["sha256"] == hashlib.sha256(source).hexdigest()
    check = json.loads((made.root / "lik" / "summary.json").read_text())["reference_check"]
    assert check["check"] == "pyro"
    assert check["against"] == "Pyro's TraceMeanField_ELBO"
    assert made.likelihood in check["no_hand_written"]
    assert check["step_loss"] == pytest.approx(check["pyro_loss"], rel=1e-4)
    assert "= Pyro's TraceMeanField_ELBO" in made.printed["lik"]
    assert "no hand-written loss" in made.printed["lik"]


def test_a_factory_model_trains_with_its_own_options_and_is_recorded(made):
    config = json.loads((made.root / "factory" / "config.json").read_text())
    assert config["model"] == f"{made.parts}:make"
    assert config["part_options"] == {"channels": 3}
    [record] = config["plugins"]
    assert record["spec"] == made.parts
    assert record["sha256"] == hashlib.sha256((made.root / made.parts).read_bytes()).hexdigest()
    state = load_checkpoint(
        next(made.root / "factory" / c for c in CHECKPOINTS if (made.root / "factory" / c).exists())
    )
    # the conv decoder with 3 channels and z of 2: Linear(2, 3 * 7 * 7)
    assert tuple(state["model"]["decoder.fc.weight"].shape) == (3 * 7 * 7, 2)
    check = json.loads((made.root / "factory" / "summary.json").read_text())["reference_check"]
    assert check["check"] == "pyro" and "student-t" in check["no_hand_written"]


# --- reading a run with its module named again ----------------------------------------------


@pytest.mark.parametrize("run", ["lik", "factory"])
def test_a_run_is_evaluated_reported_and_sampled_with_its_plugin_named(here, run):
    plugin = ["--plugin", here.name("parts") + ".py"]
    code, out, err = _cli("evaluate", run, *plugin, *EVALUATE_IS)
    assert code == 0, err
    evaluation = json.loads(Path(run, "evaluation.json").read_text())
    assert evaluation["num_images"] == 20 and evaluation["z_dim"] == 2
    assert evaluation["test_neg_elbo"] > 0
    code, out, err = _cli("evaluate", run, *plugin, *EVALUATE_AIS, "--no-progress")
    assert code == 0, err
    evaluation = json.loads(Path(run, "evaluation.json").read_text())
    assert evaluation["ais"]["steps"] == 10 and evaluation["ais"]["chains"] == 2
    assert torch.isfinite(torch.tensor(evaluation["ais"]["test_log_likelihood"]))
    code, out, err = _cli("report", run, *plugin)
    assert code == 0, err
    assert Path(run, "report.html").stat().st_size > 0
    code, out, err = _cli("sample", run, *plugin, "--num", "4")
    assert code == 0, err
    assert torch.load(Path(run, "samples.pt"), weights_only=True).shape == (4, 784)


READERS = {
    "evaluate": lambda run: ["evaluate", run, *EVALUATE_IS],
    "report": lambda run: ["report", run],
    "sample": lambda run: ["sample", run, "--num", "4"],
    "resume": lambda run: ["train", "--resume", "--out", run, "--epochs", "2", *QUIET],
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("run", ["lik", "factory"])
def test_a_run_read_without_its_plugin_is_refused_and_nothing_written(here, run, reader):
    before = _snapshot(here.root)
    code, out, err = _cli(*READERS[reader](run))
    assert code == 2
    assert _error_line(err).endswith(f"(--plugin {here.name('parts')}.py)")
    assert _snapshot(here.root) == before


@pytest.mark.parametrize("reader", READERS)
def test_a_run_read_with_another_plugin_only_is_refused(here, reader):
    other = here.write("other", "from pyro_vae import PRIORS\n")
    before = _snapshot(here.root)
    code, out, err = _cli(*READERS[reader]("factory"), "--plugin", other)
    assert code == 2
    line = _error_line(err)
    assert f"'{here.name('parts')}.py'" in line
    assert f"--plugin {here.name('parts')}.py" in line
    assert _snapshot(here.root) == before


def test_kl_warmup_ramps_beta_of_a_factory_model(tmp_path, monkeypatch):
    """4,000 images in batches of 2,000: 2 steps an epoch, the first epoch's all warm-up."""
    monkeypatch.chdir(tmp_path)
    with workspace(tmp_path) as ws:
        parts = ws.parts()
        flags = f"--model {parts}:make --z-dim 2 --batch-size 2000 --epochs 2 --kl-warmup-epochs 1"
        code, out, err = _cli("train", *flags.split(), "--no-tensorboard", *QUIET, "--out", "run")
        assert code == 0, err
    betas = [r["beta"] for r in read_metrics(tmp_path / "run" / "metrics.csv")]
    assert betas == [0.5, 1.0]


# --- a run directory never chooses what code runs --------------------------------------------


def _edit_to_name(run: Path, evil: str, how: str) -> None:
    """Edit the run's config.json so that it names the module ``evil``: its model made by
    ``evil:make``, and (``how``) a record of it as a module or a file beside the real one, in
    place of it, one that goes by the real one's file, or none."""
    config = json.loads((run / "config.json").read_text())
    config["model"] = f"{evil}:make" if how != "file" else f"{evil}.py:make"
    record = dict(config["plugins"][0], spec=evil, module=evil, kind="module", sha256=None)
    record["path"] = str(Path(f"{evil}.py").resolve())
    if how == "file":
        record.update(spec=f"{evil}.py", kind="file")
    if how == "disguised":
        record.update(spec=config["plugins"][0]["spec"], kind="file")
    if how == "in place":
        config["plugins"] = [record]
    elif how != "no record":
        config["plugins"].append(record)
    (run / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("how", ["module", "file", "in place", "disguised", "no record"])
@pytest.mark.parametrize("reader", READERS)
def test_a_run_edited_to_name_another_module_never_imports_it(here, reader, how):
    evil = here.name("evil")
    (here.root / f"{evil}.py").write_text(EVIL)
    _edit_to_name(here.root / "factory", evil, how)
    for plugin in ([], ["--plugin", here.name("parts") + ".py"]):
        before = _snapshot(here.root)
        code, out, err = _cli(*READERS[reader]("factory"), *plugin)
        assert code == 2, err
        line = _error_line(err)
        if plugin or how not in ("no record", "disguised"):
            assert evil in line
        assert not (here.root / "IMPORTED").exists()
        assert evil not in sys.modules
        assert _snapshot(here.root) == before


# --- bad input: one line, exit 2, no run directory --------------------------------------------

BAD_FACTORIES = '''
import pyro
import pyro.distributions as dist
import torch

from pyro_vae import VAE


def as_list(data_shape, *, z_dim: int = 2):
    return [make(data_shape, z_dim=z_dim)]


class Unplated(VAE):
    """The observation outside plate('data')."""

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
        pyro.sample("x", self.likelihood(self.decoder(z)).to_event(1), obs=x)


class GlobalLatent(VAE):
    """A latent shared by the batch."""

    def model(self, x):
        shift = pyro.sample("shift", dist.Normal(torch.zeros(1), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z) + shift), obs=x)

    def guide(self, x):
        pyro.sample("shift", dist.Normal(torch.zeros(1), 1.0).to_event(1))
        return super().guide(x)


class LostLatent(VAE):
    """A second latent that the guide never samples."""

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            w = pyro.sample("w", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z + w)), obs=x)


def _of(cls, data_shape, z_dim):
    base = make(data_shape, z_dim=z_dim)
    return cls(base.encoder, base.decoder, base.likelihood, base.prior)


def unplated(data_shape, *, z_dim: int = 2):
    return _of(Unplated, data_shape, z_dim)


def global_latent(data_shape, *, z_dim: int = 2):
    return _of(GlobalLatent, data_shape, z_dim)


def lost_latent(data_shape, *, z_dim: int = 2):
    return _of(LostLatent, data_shape, z_dim)
'''


def _bad_input(ws, case: str) -> tuple[list[str], str]:
    """The command line of a bad-input case, and what its error line must say."""
    parts = ws.parts("bad", tail=BAD_FACTORIES)
    if case == "plugin raises on import":
        broken = ws.parts("broken", tail="raise RuntimeError('no licence server')\n")
        return ["--plugin", broken], "failed to import: RuntimeError: no licence server"
    if case == "no such factory":
        return ["--model", f"{parts}:missing_name"], "has no function 'missing_name'"
    if case == "factory returns a list":
        return ["--model", f"{parts}:as_list"], "returned a list, not a pyro_vae.VAE"
    if case == "observed outside the plate":
        return ["--model", f"{parts}:unplated"], "the observed site 'x' is not inside"
    if case == "latent outside the plate":
        return ["--model", f"{parts}:global_latent"], "latent site 'shift' of the model"
    if case == "guide misses a latent":
        return ["--model", f"{parts}:lost_latent"], "does not sample the model's latent site"
    if case == "option without its part":
        return ["--plugin", parts, "--df", "5", "--hidden", "16"], "--df does not apply"
    if case == "clash with a built-in":
        clash = ws.write("clash", parts_clash())
        return ["--plugin", clash], "likelihood 'bernoulli' is registered already"
    raise AssertionError(case)


def parts_clash() -> str:
    return (
        "from pyro_vae import LIKELIHOODS, Likelihood\n\n\n"
        "@LIKELIHOODS.register('bernoulli')\nclass Mine(Likelihood):\n    pass\n"
    )


BAD_CASES = [
    "plugin raises on import",
    "no such factory",
    "factory returns a list",
    "observed outside the plate",
    "latent outside the plate",
    "guide misses a latent",
    "option without its part",
    "clash with a built-in",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_and_makes_no_run_directory(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    with workspace(tmp_path) as ws:
        flags, needle = _bad_input(ws, case)
        before = _snapshot(tmp_path)
        code, out, err = _cli("train", *flags, *TINY, *QUIET, "--out", "run")
        assert code == 2, err
        assert needle in _error_line(err)
        assert not (tmp_path / "run").exists()
        assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["factory returns a list", "latent outside the plate"])
def test_bad_input_leaves_an_existing_run_unchanged(here, case):
    flags, needle = _bad_input(here, case)
    before = _snapshot(here.root)
    code, out, err = _cli("train", *flags, *TINY, *QUIET, "--out", "factory", "--overwrite")
    assert code == 2, err
    assert needle in _error_line(err)
    assert {k: v for k, v in _snapshot(here.root).items() if k.startswith("factory")} == {
        k: v for k, v in before.items() if k.startswith("factory")
    }


# --- a real process: training, SIGKILL, resume ------------------------------------------------


def _checkpoint(run: Path) -> Path | None:
    return next((run / c for c in CHECKPOINTS if (run / c).exists()), None)


def _final(run: Path) -> tuple[dict, list, list]:
    """The run's final parameters, its checkpoint's metrics and metrics.csv, without the
    timings."""
    state = load_checkpoint(_checkpoint(run))
    metrics = [{k: v for k, v in r.items() if k not in TIMING} for r in state["metrics"]]
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    keep = [i for i, name in enumerate(header.split(",")) if name not in TIMING]
    csv = [[row.split(",")[i] for i in keep] for row in rows]
    return state["model"], metrics, csv


def _assert_identical(a: Path, b: Path) -> None:
    params_a, metrics_a, csv_a = _final(a)
    params_b, metrics_b, csv_b = _final(b)
    assert params_a.keys() == params_b.keys()
    for key in params_a:
        assert torch.equal(params_a[key], params_b[key]), key
    assert metrics_a == metrics_b
    assert csv_a == csv_b


@pytest.mark.slow
def test_a_factory_run_killed_with_sigkill_resumes_bit_for_bit(tmp_path, monkeypatch):
    """A real ``python -m pyro_vae train --model parts.py:make`` is killed as its first
    checkpoint appears; ``train --resume --plugin parts.py`` (another real process) ends where
    an unbroken run (in this process, the same threads) ends, bit for bit."""
    monkeypatch.chdir(tmp_path)
    with workspace(tmp_path) as ws:
        parts = ws.parts()
        flags = f"--model {parts}:make --z-dim 2 --batch-size 250 --epochs 2 --checkpoint-every 5"
        flags = [*flags.split(), "--no-tensorboard", *QUIET]
        killed = tmp_path / "killed"
        proc = subprocess.Popen(
            command("train", *flags, "--out", "killed"),
            cwd=tmp_path,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 240
        while _checkpoint(killed) is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL  # killed, not finished
        position = load_checkpoint(_checkpoint(killed))["position"]
        assert position["epoch"] < 2  # mid-run: there is something left to resume
        resumed = run_command(
            tmp_path, "train", "--resume", "--plugin", parts, "--out", "killed", *QUIET
        )
        assert resumed.returncode == 0, resumed.stderr
        code, out, err = _cli("train", *flags, "--out", "unbroken")
        assert code == 0, err
        _assert_identical(tmp_path / "unbroken", killed)
        config = json.loads((killed / "config.json").read_text())
        assert config["plugins"][0]["spec"] == parts


@pytest.mark.slow
def test_a_real_process_trains_with_a_plugin_and_never_imports_what_its_run_names(
    tmp_path,
):
    """``python -m pyro_vae`` as a user runs it, in the folder of their module (which is then
    on sys.path: a module the run directory named would import, if anything imported it)."""
    with workspace(tmp_path) as ws:
        parts = ws.parts()
        flags = f"--plugin {parts} --likelihood {ws.likelihood} --df 5 --prior student-t"
        done = run_command(
            tmp_path, "train", *flags.split(), "--hidden", "16", *TINY, *QUIET, "--out", "run"
        )
        assert done.returncode == 0, done.stderr
        assert "= Pyro's TraceMeanField_ELBO" in done.stdout
        evil = ws.name("evil")
        (tmp_path / f"{evil}.py").write_text(EVIL)
        _edit_to_name(tmp_path / "run", evil, "module")
        before = _snapshot(tmp_path)
        refused = run_command(tmp_path, "evaluate", "run", "--plugin", parts, *EVALUATE_IS)
        assert refused.returncode == 2
        assert evil in _error_line(refused.stderr)
        assert not (tmp_path / "IMPORTED").exists()
        assert _snapshot(tmp_path) == before
