from __future__ import annotations

import json
import math

import pytest
import torch

from pyro_vae import TrainConfig, build_vae, evaluate_elbo, train
from pyro_vae.checks import ReferenceMismatch, reference_densities
from pyro_vae.cli import main
from pyro_vae.data import ImageData
from pyro_vae.training import run_dir as runs


@pytest.fixture
def small_data(mnist_sample):
    d = mnist_sample
    return ImageData(
        d.train_x[::8], d.train_y[::8], d.test_x[::5], d.test_y[::5], name="mnist-sample-small"
    )


def _config(tmp_path, **kw) -> TrainConfig:
    base = dict(
        epochs=3, batch_size=64, hidden=(64,), z_dim=4, out=str(tmp_path / "run"), progress=False
    )
    return TrainConfig(**(base | kw))


def test_a_run_leaves_a_complete_directory(tmp_path, small_data):
    result = train(_config(tmp_path), small_data)
    out = tmp_path / "run"
    config = json.loads((out / runs.CONFIG).read_text())
    assert config["likelihood"] == "bernoulli" and config["epochs"] == 3
    rows = runs.read_metrics(out / runs.METRICS)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert all(math.isfinite(v) for v in r.values())
        assert r["test_neg_elbo"] == pytest.approx(r["test_distortion"] + r["test_rate"])
    assert rows[-1]["test_neg_elbo"] < rows[0]["test_neg_elbo"] - 20  # it learns
    summary = json.loads((out / runs.SUMMARY).read_text())
    assert summary["test_neg_elbo"] == pytest.approx(rows[-1]["test_neg_elbo"])
    assert summary["seconds_per_epoch"] > 0 and summary["num_train"] == 500
    rc = summary["reference_check"]
    assert rc["pyro_loss"] == pytest.approx(rc["reference_loss"], rel=1e-4)
    for fig in ["loss_curves.png", "reconstructions.png", "prior_samples.png"]:
        assert (out / runs.FIGURES / fig).stat().st_size > 10_000
    # the checkpoint restores the trained model
    state = runs.load_checkpoint(out / runs.CHECKPOINT)
    assert state["position"]["epoch"] == 3 and state["position"]["batch"] == 0
    fresh = build_vae((1, 28, 28), hidden=(64,), z_dim=4)
    fresh.load_state_dict(state["model"])
    x = torch.bernoulli(small_data.test_x[:50])
    torch.manual_seed(0)
    a = evaluate_elbo(fresh.model, fresh.guide, x).neg_elbo
    torch.manual_seed(0)
    b = evaluate_elbo(result.vae.model, result.vae.guide, x).neg_elbo
    assert a == b


def test_same_seed_same_metrics(tmp_path, small_data):
    a = train(_config(tmp_path / "a", epochs=2), small_data).metrics
    b = train(_config(tmp_path / "b", epochs=2), small_data).metrics
    drop = {"train_seconds", "eval_seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in a] == [
        {k: v for k, v in r.items() if k not in drop} for r in b
    ]


@pytest.mark.parametrize(
    "likelihood,binarize",
    [
        ("continuous-bernoulli", "none"),
        ("gaussian-learned", "none"),
        ("gaussian", "none"),
    ],
)
@pytest.mark.parametrize("prior", ["learned-normal", "mixture"])
def test_other_families_train(tmp_path, small_data, likelihood, binarize, prior):
    result = train(
        _config(
            tmp_path,
            epochs=2,
            likelihood=likelihood,
            binarize=binarize,
            prior=prior,
            estimator="trace",
        ),
        small_data,
    )
    rc = result.summary["reference_check"]  # Pyro's loss is the family's hand-written one
    assert rc["pyro_loss"] == pytest.approx(rc["reference_loss"], rel=1e-4)
    rows = result.metrics
    for r in rows:
        assert r["test_neg_elbo"] == pytest.approx(r["test_distortion"] + r["test_rate"])
        assert r["test_rate"] > 0  # a KL: positive whenever q is not the prior
    assert rows[-1]["test_neg_elbo"] < rows[0]["test_neg_elbo"]  # it learns


def test_kl_warmup_raises_beta_over_the_epochs(tmp_path, small_data):
    # 500 images / 64 = 8 steps per epoch; 2 warm-up epochs = 16 steps
    metrics = train(_config(tmp_path, beta=1.0, kl_warmup_epochs=2), small_data).metrics
    assert [r["beta"] for r in metrics] == [7 / 16, 15 / 16, 1.0]


def test_a_reference_mismatch_stops_the_run_before_training(tmp_path, small_data, monkeypatch):
    def wrong(lik, out, x):
        return 1.001 * (x * out - torch.nn.functional.softplus(out)).sum(-1)

    monkeypatch.setitem(reference_densities.LOG_LIKELIHOODS, "bernoulli", wrong)
    with pytest.raises(ReferenceMismatch):
        train(_config(tmp_path), small_data)
    assert not (tmp_path / "run" / runs.METRICS).exists()
    # the user can opt out
    train(_config(tmp_path, epochs=1, check_reference=False), small_data)


def test_grey_data_with_bernoulli_is_refused(tmp_path, small_data):
    with pytest.raises(ValueError, match="binarize"):
        train(_config(tmp_path, binarize="none"), small_data)


@pytest.mark.parametrize(
    "field,value",
    [
        ("beta", -1.0),
        ("particles", 0),
        ("lr", 0.0),
        ("z_dim", 0),
        ("batch_size", 0),
    ],
)
def test_invalid_config_values(tmp_path, field, value):
    with pytest.raises(ValueError, match="--" + field.replace("_", "-")):
        _config(tmp_path, **{field: value})


def test_cli_train_and_its_errors(tmp_path, capsys):
    out = tmp_path / "cli_run"
    code = main(
        [
            "train",
            "--epochs",
            "1",
            "--hidden",
            "64",
            "--z-dim",
            "4",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "reference check: Pyro loss" in printed and "test_neg_elbo" in printed
    assert (out / runs.SUMMARY).exists()

    code = main(["train", "--likelihood", "bernouli", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "continuous-bernoulli" in err and "Traceback" not in err
    assert main(["train", "--beta", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert "beta must be >= 0" in capsys.readouterr().err


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / runs.CHECKPOINT
    runs.save_checkpoint(target, {"step": 1})

    def broken(f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        runs.atomic_write(target, broken)
    assert runs.load_checkpoint(target) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == [runs.CHECKPOINT]  # no temp file left


def test_python_and_the_command_line_resume_by_one_decision(tmp_path, small_data):
    """pyro_vae.train(out=..., resume=True) continues the run with its own options, as
    pyro-vae train --resume does (one function makes both configs), and both refuse a changed
    option, or a directory with no run, in the same words."""
    from pyro_vae.cli import parser, train_config
    from pyro_vae.training import ConfigError, RunDirectoryError
    from pyro_vae.training.run import resumed_config

    out = str(tmp_path / "run")
    train(_config(tmp_path, epochs=1, lr=0.002, z_dim=3), small_data)
    flags = ["train", "--resume", "--out", out, "--no-progress"]
    from_flags = train_config(parser().parse_args([*flags, "--epochs", "2"]))
    assert from_flags == resumed_config({"out": out, "epochs": 2, "progress": False})
    assert (from_flags.lr, from_flags.z_dim, from_flags.epochs) == (0.002, 3, 2)
    refused = "a resumed run keeps its options; these differ from the run's: --z-dim, --lr"
    with pytest.raises(ConfigError, match=refused):
        train_config(parser().parse_args([*flags, "--lr", "0.01", "--z-dim", "4"]))
    with pytest.raises(ConfigError, match=refused):
        train(data=small_data, out=out, resume=True, lr=0.01, z_dim=4)
    with pytest.raises(RunDirectoryError, match="cannot resume: .* is not a run directory"):
        train(data=small_data, out=str(tmp_path / "nothing"), resume=True)
    resumed = train(data=small_data, out=out, resume=True, epochs=2, progress=False, z_dim=3)
    assert [r["epoch"] for r in resumed.metrics] == [1, 2]


def test_a_finished_run_may_be_resumed_with_the_epochs_it_has_done():
    """--epochs may stay as it was on resume (nothing is left to train) or grow; only fewer
    epochs than the checkpoint has done is refused."""
    import dataclasses

    from pyro_vae.training import ConfigError
    from pyro_vae.training.run import check_resumable

    config = TrainConfig(epochs=2, out="run")
    state = {"config": config.as_dict(), "position": {"epoch": 2}}
    check_resumable(config, state)
    check_resumable(dataclasses.replace(config, epochs=3), state)
    with pytest.raises(ConfigError, match="--epochs 1 is less than the 2 epochs done"):
        check_resumable(dataclasses.replace(config, epochs=1), state)


def test_resume_in_process_extends_a_finished_run(tmp_path, small_data):
    """--epochs may grow on resume: 2 epochs + 1 more = 3 epochs straight."""
    straight = train(_config(tmp_path / "straight", epochs=3), small_data)
    train(_config(tmp_path / "split", epochs=2), small_data)
    resumed = train(_config(tmp_path / "split", epochs=3), small_data, resume=True)
    for a, b in zip(straight.vae.parameters(), resumed.vae.parameters(), strict=True):
        assert torch.equal(a, b)
    drop = {"train_seconds", "eval_seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in straight.metrics] == [
        {k: v for k, v in r.items() if k not in drop} for r in resumed.metrics
    ]
    assert len(runs.read_metrics(tmp_path / "split" / "run" / runs.METRICS)) == 3
