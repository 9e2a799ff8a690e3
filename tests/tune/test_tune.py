"""``pyro-vae tune``: the search space and its checks (one line naming the file and the key,
before any trial runs), pruning that stops a run whole, several workers sharing one study
(exactly --trials trials, each run once, in its own run directory), replicates as mean ± sd,
and the summary rebuilt from the storage alone."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_vae.cli import main
from pyro_vae.tune import Objective, Searched, check_space, read_space
from pyro_vae.tune.optuna_import import INSTALL

ROOT = Path(__file__).resolve().parents[2]
# two epochs of an MLP 784-16-2 on mnist-sample: about a second of training per run
TINY = "epochs = 2\nhidden = [16]\nz_dim = 2\n\n[run]\ntensorboard = false\n"
SEARCH = "\n[search]\nlr = {low = 1e-4, high = 1e-2, log = true}\n"


def _space_file(tmp_path: Path, text: str, name: str = "space.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _tune(*argv: str) -> int:
    return main(["tune", *argv])


# --- the space ---------------------------------------------------------------------------------


def test_ranges_and_choices_are_read_with_their_kinds():
    space = read_space(
        {
            "lr": {"low": 1e-4, "high": 1e-2, "log": True},
            "z-dim": {"low": 2, "high": 32, "step": 2},
            "beta": {"low": 0, "high": 2.0},
            "likelihood": {"choices": ["bernoulli", "continuous-bernoulli"]},
            "hidden": {"choices": [[200], [400, 200]]},
        }
    )
    lr, z_dim, beta, likelihood, hidden = space
    assert (lr.name, lr.log, lr.integer) == ("lr", True, False)
    assert (z_dim.name, z_dim.step, z_dim.integer) == ("z_dim", 2, True)
    assert not beta.integer  # a real bound makes a real range
    assert likelihood.choices == ("bernoulli", "continuous-bernoulli")
    # a list is offered to Optuna by its label, and mapped back to the option's value
    assert hidden.choices == ((200,), (400, 200))
    assert hidden.value_of("[400, 200]") == (400, 200)
    assert hidden.record() == {"choices": [[200], [400, 200]]}


def test_a_trial_draws_each_option_as_the_option_takes_it():
    optuna = pytest.importorskip("optuna")
    space = read_space(
        {
            "z_dim": {"low": 2, "high": 32, "step": 2},
            "lr": {"low": 1e-4, "high": 1e-2, "log": True},
            "hidden": {"choices": [[200], [400, 200]]},
        }
    )
    trial = optuna.trial.FixedTrial({"z_dim": 8, "lr": 1e-3, "hidden": "[400, 200]"})
    assert {s.name: s.suggest(trial) for s in space} == {
        "z_dim": 8,
        "lr": 1e-3,
        "hidden": (400, 200),
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = [s.suggest(study.ask()) for s in space for _ in range(5)]
    assert all(type(v) is int and v % 2 == 0 for v in drawn[:5])
    assert all(1e-4 <= v <= 1e-2 for v in drawn[5:10])
    assert all(v in ((200,), (400, 200)) for v in drawn[10:])


BAD_SPACES = [
    ("lr = {low = 1e-2, high = 1e-4}", "search.lr: low (0.01) must be less than high (0.0001)"),
    ("lr = {low = 0, high = 1, log = true}", "search.lr: log needs low > 0"),
    ("z_dim = {low = 2.5, high = 8}", "search.z_dim: is an integer, not 2.5"),
    ("z_dim = {low = 0, high = 8}", "search.z_dim: 0: --z-dim must be >= 1"),
    ("z_dim = {low = 2, high = 9, step = 2}", "search.z_dim: high - low (7) is not a multiple"),
    ("z_dim = {low = 1, high = 9, step = 2, log = true}", "search.z_dim: log and step"),
    ("zdim = {low = 2, high = 8}", "search.zdim: not an option of pyro-vae train (did you mean"),
    ("lr = {lo = 1e-4, high = 1e-2}", "search.lr: unknown key 'lo'"),
    ("lr = {high = 1e-2}", "search.lr: a range needs low and high (missing: low)"),
    ("lr = 0.001", "search.lr: is a table"),
    ("lr = {low = 1e-4, high = 1e-2, choices = [1e-3]}", "search.lr: choices or a range"),
    ('likelihood = {choices = ["bernoulli", "bernouli"]}', "unknown likelihood 'bernouli'"),
    ("likelihood = {choices = []}", "search.likelihood: choices is a list of at least one"),
    ("hidden = {choices = [[16], [16]]}", "search.hidden: choices has [16] twice"),
    ('out = {choices = ["a", "b"]}', "search.out: is not searched"),
    ("sigma = {low = 0.1, high = 0.2}", "search.sigma: 0.1: --sigma does not apply"),
    ("epochs = {choices = [1, 2]}", "search.epochs: is searched and given as a base option"),
]


@pytest.mark.parametrize("spec, message", BAD_SPACES, ids=[s for s, _ in BAD_SPACES])
def test_a_bad_space_is_one_line_naming_the_file_and_key_before_any_trial(
    tmp_path, capsys, spec, message
):
    pytest.importorskip("optuna")
    path = _space_file(tmp_path, f"epochs = 2\n\n[search]\n{spec}\n")
    out = tmp_path / "out"
    assert _tune("--config", str(path), "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"pyro-vae: error: {path}: search."), err
    assert message in err, err
    assert not out.exists()  # nothing written, no study made


BAD_BASES = [
    ('likelihod = "gaussian"', "likelihod: unknown option for pyro-vae train (did you mean"),
    ('batch_size = "many"', "batch_size: is an integer, not 'many'"),
    ("sigma = 0.3", "sigma: --sigma does not apply"),
    ('out = "runs/x"', "out: each trial has its own run directory"),
]


@pytest.mark.parametrize("line, message", BAD_BASES, ids=[b for b, _ in BAD_BASES])
def test_base_options_are_checked_as_train_checks_them(tmp_path, capsys, line, message):
    pytest.importorskip("optuna")
    path = _space_file(tmp_path, f"{line}\n{TINY}{SEARCH}")
    assert _tune("--config", str(path), "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pyro-vae: error: {path}: ") and len(err.splitlines()) == 1, err
    assert message in err, err


def test_check_space_from_python_names_the_key():
    space = [Searched("likelihood", choices=("bernoulli", "nope"))]
    with pytest.raises(ValueError, match=r"search.likelihood: nope: unknown likelihood"):
        check_space(space, {"epochs": 1})


def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path, capsys):
    pytest.importorskip("optuna")
    path = _space_file(tmp_path, TINY + SEARCH)
    for url in ("nosuch://host/db", f"sqlite:///{tmp_path}/no/such/dir/study.db"):
        assert _tune("--config", str(path), "--out", str(tmp_path), "--storage", url) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"pyro-vae: error: --storage {url}: cannot open the study ("), err
        assert len(err.splitlines()) == 1


def test_without_optuna_the_command_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    path = _space_file(tmp_path, TINY + SEARCH)
    assert _tune("--config", str(path), "--out", str(tmp_path / "out")) == 2
    assert capsys.readouterr().err.strip() == f"pyro-vae: error: {INSTALL}"
    assert not (tmp_path / "out").exists()


def test_importing_the_package_and_its_command_line_does_not_import_optuna():
    code = (
        "import sys, pyro_vae, pyro_vae.tune, pyro_vae.cli\n"
        "pyro_vae.cli.parser()\n"
        "from pyro_vae.tune import read_space, TuneSettings\n"
        "assert 'optuna' not in sys.modules, 'optuna imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


# --- trials ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_pruned_trial_stops_its_run_whole_after_the_epoch(tmp_path):
    optuna = pytest.importorskip("optuna")
    from pyro_vae.tune.worker import run_trial

    class Always(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    study = optuna.create_study(pruner=Always())
    space = read_space({"lr": {"low": 1e-3, "high": 1e-2}})
    base = {"epochs": 3, "hidden": (16,), "z_dim": 2, "tensorboard": False}
    run_trial(study, study.ask(), Objective(base, space, tmp_path))
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["pruned_at_epoch"] == 1 and list(trial.intermediate_values) == [1]
    run_dir = tmp_path / "trial-0000"
    assert trial.user_attrs["run_dir"] == str(run_dir)
    with open(run_dir / "metrics.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1"]
    assert not (run_dir / "summary.json").exists()  # stopped, not finished
    # the epoch it stopped after was saved: the run goes on from there
    assert main(["train", "--resume", "--out", str(run_dir), "--no-progress"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 3


def _trials(storage: str, name: str = "pyro-vae") -> list:
    import optuna

    return optuna.load_study(study_name=name, storage=storage).get_trials()


@pytest.mark.slow
def test_two_workers_share_one_study_and_run_each_trial_once(tmp_path, capsys):
    pytest.importorskip("optuna")
    path = _space_file(tmp_path, TINY + SEARCH)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "pyro_vae", "tune", "--config", str(path), "--trials", "4"]
    argv += ["--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores
    workers = [
        subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [e for _, e in outputs]
    trials = _trials(f"sqlite:///{out / 'study.db'}")
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    run_dirs = [t.user_attrs["run_dir"] for t in trials]
    assert sorted(run_dirs) == [str(out / f"trial-{n:04d}") for n in range(4)]
    assert sorted(p.name for p in out.glob("trial-*")) == [f"trial-{n:04d}" for n in range(4)]
    assert all((Path(d) / "metrics.csv").exists() for d in run_dirs)
    # no trial run twice: what the workers ran adds up to the study's trials
    ran = [int(e.rsplit("(", 1)[1].split()[0]) for _, e in outputs]
    assert sum(ran) == 4, [e for _, e in outputs]
    for name in ("tune.md", "tune.csv", "tune.json", "tune.png"):
        assert (out / name).exists(), name
    with open(out / "tune.csv") as f:
        assert sorted(int(r["trial"]) for r in csv.DictReader(f)) == [0, 1, 2, 3]
    # the summary again from the storage alone
    for name in ("tune.md", "tune.csv", "tune.png"):
        (out / name).unlink()
    assert _tune("--config", str(path), "--out", str(out), "--summary-only") == 0
    printed = capsys.readouterr().out
    assert "4 trials (" in printed and printed.count("| `" + str(out / "trial-")) == 4, printed
    assert all((out / n).exists() for n in ("tune.md", "tune.csv", "tune.png"))


@pytest.mark.slow
def test_replicates_give_the_mean_and_sd_of_their_runs(tmp_path, capsys):
    pytest.importorskip("optuna")
    path = _space_file(tmp_path, TINY + "seed = 3\n" + SEARCH)
    out = tmp_path / "out"
    argv = ["--config", str(path), "--out", str(out), "--trials", "1", "--replicates", "2"]
    assert _tune(*argv) == 0
    printed = capsys.readouterr().out
    (trial,) = _trials(f"sqlite:///{out / 'study.db'}")
    runs = [out / "trial-0000" / f"seed-{s}" for s in (3, 4)]
    assert trial.user_attrs["run_dirs"] == [str(r) for r in runs]
    values = [json.loads((r / "summary.json").read_text())["test_neg_elbo"] for r in runs]
    assert trial.user_attrs["values"] == pytest.approx(values)
    assert trial.value == pytest.approx(statistics.fmean(values))
    assert trial.user_attrs["value_sd"] == pytest.approx(statistics.stdev(values))
    with open(out / "tune.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["value"]) == pytest.approx(statistics.fmean(values))
    assert float(row["sd"]) == pytest.approx(statistics.stdev(values))
    shown = f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"
    assert shown in printed and shown in (out / "tune.md").read_text()
    # a worker asked to search otherwise is refused, not mixed into the study
    assert _tune(*argv[:-1], "3") == 2
    err = capsys.readouterr().err
    assert "was made with other settings (replicates differ)" in err, err
