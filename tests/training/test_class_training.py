"""The models with a class variable (m2, joint) and the invariant VAE through the trainer:
options, the first-batch reference check, resume, metrics, figures, the report, evaluation,
and the semi-supervised study's pieces."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from support import saved_data, tiny_config

from pyro_vae import train
from pyro_vae.checks.baseline_classifier import test_error as classifier_error
from pyro_vae.checks.baseline_classifier import train_labelled_only
from pyro_vae.cli import main
from pyro_vae.data import (
    ImageData,
    balanced_choice,
    labelled_rows,
    rotated_mnist_sample,
    with_labels,
)
from pyro_vae.data.datasets import DataError
from pyro_vae.inference.class_measures import cluster_accuracy, cluster_matching
from pyro_vae.inference.schedules import GeometricRamp
from pyro_vae.training import Trainer, assemble, load_run
from pyro_vae.training import run_dir as runs
from pyro_vae.training.options import ConfigError


@pytest.fixture
def small_balanced(mnist_sample):
    """400 training images (40 of each digit) and 100 test images."""
    d = mnist_sample
    return ImageData(d.train_x[::10], d.train_y[::10], d.test_x[::10], d.test_y[::10])


def test_a_label_budget_is_class_balanced_seeded_and_only_on_training_rows(small_balanced):
    data = with_labels(small_balanced, 20, seed=3)
    labelled = labelled_rows(data.train_x, 10)
    assert data.train_x.shape == (400, 794) and data.context_dim == 10
    assert int(labelled.sum()) == 20 and not labelled_rows(data.test_x, 10).any()
    one_hot = data.train_x[labelled, 784:]
    assert torch.equal(one_hot.argmax(-1), small_balanced.train_y[labelled])
    assert torch.equal(one_hot.sum(0), torch.full((10,), 2.0))  # two of each class
    again = with_labels(small_balanced, 20, seed=3)
    assert torch.equal(again.train_x, data.train_x)
    other = balanced_choice(small_balanced.train_y, 20, seed=4)
    assert not torch.equal(other, balanced_choice(small_balanced.train_y, 20, seed=3))
    with pytest.raises(DataError, match="multiple of the 10 classes"):
        with_labels(small_balanced, 25)
    with pytest.raises(DataError, match="need 50 images of class"):
        with_labels(small_balanced, 500)


@pytest.mark.parametrize(
    "options, needle",
    [
        (dict(labels=20), "--labels applies only with --model m2"),
        (dict(model="m2", estimator="trace"), "--discrete enumerate is estimated by"),
        (dict(model="joint", discrete="score", estimator="enum"), "--discrete score"),
        (dict(model="m2", compile=True), "drop --compile"),
        (dict(estimator="enum"), "for a model with a class variable"),
        (dict(model="joint", temperature=2.0), "--temperature does not apply"),
        (dict(model="invariant", estimator="iwae"), "--model invariant is checked"),
    ],
)
def test_options_that_do_not_fit_the_model_are_refused(tmp_path, options, needle):
    with pytest.raises(ConfigError, match=needle):
        tiny_config(tmp_path, **options)


def test_the_automatic_estimator_follows_the_class_site(tmp_path):
    for discrete, estimator in [
        ("enumerate", "enum"),
        ("score", "score-function"),
        ("relaxed", "trace"),
    ]:
        assert tiny_config(tmp_path, model="joint", discrete=discrete).estimator == estimator


def test_m2_trains_checks_resumes_and_draws(tmp_path, small_balanced):
    """The first batch equals the hand-written loss; test_error is recorded and summarised; a
    run stopped after one epoch and resumed ends where an unbroken one ends, bit for bit; the
    figures and the report are drawn."""

    data = str(saved_data(tmp_path / "balanced.npz", small_balanced))  # (the report reads it)

    def config(out, epochs):
        return tiny_config(
            tmp_path, data=data, model="m2", labels=20, epochs=epochs, out=str(tmp_path / out)
        )

    trainer = Trainer(assemble(config("fresh", 1)))
    check = trainer.reference_check
    assert check["pyro_loss"] == pytest.approx(check["reference_loss"], rel=1e-4)
    straight = train(config("straight", 2))
    train(config("resumed", 1))
    resumed = train(config("resumed", 2), resume=True)
    for (name, a), b in zip(straight.vae.named_parameters(), resumed.vae.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert [r["test_error"] for r in straight.metrics] == [r["test_error"] for r in resumed.metrics]
    assert 0 <= straight.summary["test_error"] <= 1
    header = (tmp_path / "straight" / runs.METRICS).read_text().splitlines()[0]
    assert header.endswith("test_error")
    figures = {p.name for p in (tmp_path / "straight" / "figures").iterdir()}
    assert {"prior_samples.png", "reconstructions.png", "latent_map.png"} <= figures
    assert "latent_traversal.png" not in figures  # decodes z alone: not for a class model
    assert main(["report", str(tmp_path / "straight")]) == 0
    assert "test_error" in (tmp_path / "straight" / "report.html").read_text()


@pytest.mark.parametrize("discrete", ["score", "relaxed"])
def test_joint_trains_with_each_estimator(tmp_path, small_balanced, discrete):
    config = tiny_config(tmp_path, model="joint", discrete=discrete, classes=4)
    result = train(config, small_balanced)
    check = json.loads((tmp_path / "run" / runs.SUMMARY).read_text())["reference_check"]
    assert check["pyro_loss"] == pytest.approx(check["reference_loss"], rel=1e-4)
    assert result.metrics[-1]["test_neg_elbo"] < result.metrics[0]["test_neg_elbo"]
    assert 0 <= result.summary["test_error"] <= 1


def test_the_relaxed_temperature_falls_to_its_floor(tmp_path, small_balanced):
    config = tiny_config(
        tmp_path, model="joint", discrete="relaxed", temperature=2.0, temperature_floor=0.5,
        temperature_epochs=1.0,
    )  # fmt: skip
    parts = assemble(config, small_balanced)
    steps = parts.steps_per_epoch
    seen = []
    for step in (0, steps // 2, steps, 10 * steps):
        for schedule in parts.schedules:
            schedule.update(step)
        seen.append(parts.vae.discrete.temperature)
    assert seen == pytest.approx([2.0, 2.0 * 0.25 ** ((steps // 2) / steps), 0.5, 0.5])
    ramp = GeometricRamp(1.0, 0.5, 4)
    assert [ramp(t) for t in range(5)] == pytest.approx([1, 0.5**0.25, 0.5**0.5, 0.5**0.75, 0.5])


def test_is_evaluation_of_m2_is_finite_and_above_the_elbo(tmp_path, small_balanced, capsys):
    """Test rows carry no label: log p(x) by importance sampling, y drawn from q(y|x)."""
    data = str(saved_data(tmp_path / "balanced.npz", small_balanced))  # (the command reads it)
    train(tiny_config(tmp_path, data=data, model="m2", labels=20, epochs=1))
    status = main(
        ["evaluate", str(tmp_path / "run"), "--num-samples", "64", "--max-images", "30",
         "--no-progress"]
    )  # fmt: skip
    assert status == 0
    e = json.loads((tmp_path / "run" / runs.EVALUATION).read_text())
    assert e["test_log_likelihood"] > -e["test_neg_elbo"] - 1.0  # IWAE_64 is above the ELBO
    assert e["compiled"] is False
    # a class site's draw reads tensor values: compiling is refused in one line, not a trace
    argv = ["evaluate", str(tmp_path / "run"), "--num-samples", "64", "--max-images", "2",
            "--compile", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot be recorded as one fixed graph" in err and "Traceback" not in err


def test_cluster_matching_is_the_best_one_to_one_map():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assigned = torch.tensor([2, 2, 0, 0, 1, 0])  # cluster k holds class (k + 1) mod 3
    assert cluster_matching(assigned, labels) == {2: 0, 0: 1, 1: 2}
    assert cluster_accuracy(assigned, labels) == pytest.approx(5 / 6)
    many = torch.tensor([0, 1, 2, 2, 3, 3])  # more clusters than classes: majority
    assert cluster_accuracy(many, labels) == pytest.approx(1.0)


def test_the_labelled_only_classifier_learns_from_its_labels(mnist_sample):
    d = mnist_sample
    chosen = balanced_choice(d.train_y, 100, seed=0)
    net = train_labelled_only(d.train_x[chosen], d.train_y[chosen], 10, (64,), seed=0, steps=300)
    assert classifier_error(net, d.test_x, d.test_y) < 0.5  # chance is 0.9
    shuffled = train_labelled_only(
        d.train_x[chosen], (d.train_y[chosen] + 1) % 10, 10, (64,), seed=0, steps=300
    )
    assert classifier_error(shuffled, d.test_x, d.test_y) > 0.9  # it learned the shifted labels


def test_the_invariant_model_trains_on_rotated_digits(tmp_path):
    d = rotated_mnist_sample().data
    data = ImageData(d.train_x[::10], d.train_y[::10], d.test_x[::10], d.test_y[::10])
    config = tiny_config(
        tmp_path, model="invariant", dataset="mnist-rotated", hidden=(16, 16), z_dim=2
    )
    result = train(config, data)
    check = result.summary["reference_check"]
    assert check["pyro_loss"] == pytest.approx(check["reference_loss"], rel=1e-4)
    assert result.metrics[-1]["test_neg_elbo"] < result.metrics[0]["test_neg_elbo"]


def test_circular_correlation_and_nearest_neighbours():
    from pyro_vae.studies.invariance import circular_correlation, knn_accuracy

    g = torch.Generator().manual_seed(0)
    a = (torch.rand(500, generator=g) * 2 - 1) * 3.0
    assert circular_correlation(a, a + 1.0) == pytest.approx(1.0)  # a constant offset
    assert circular_correlation(a, -a) == pytest.approx(-1.0)
    assert abs(circular_correlation(a, torch.rand(500, generator=g) * 6.28)) < 0.15
    codes = torch.cat([torch.randn(50, 2, generator=g), torch.randn(50, 2, generator=g) + 8])
    labels = torch.cat([torch.zeros(50), torch.ones(50)]).long()
    assert knn_accuracy(codes, labels, codes + 0.1, labels) == 1.0
    assert knn_accuracy(codes, labels, codes, 1 - labels) == 0.0


def test_angle_errors_are_measured_in_each_class_frame():
    from pyro_vae.studies.invariance import class_aligned_errors

    g = torch.Generator().manual_seed(0)
    applied = (torch.rand(400, generator=g) * 2 - 1) * math.pi
    classes = torch.arange(400) % 2
    frames = torch.where(classes == 0, 1.0, -2.0)  # each class upright at its own angle
    noise = 0.1 * torch.randn(400, generator=g)
    errors = class_aligned_errors(applied + frames + noise, applied, classes)
    torch.testing.assert_close(errors, (noise - noise.mean()).abs().double(), atol=0.01, rtol=0)
    flipped = applied + frames + torch.where(torch.arange(400) % 8 < 6, 0.0, math.pi)
    errors = class_aligned_errors(flipped, applied, classes)
    assert errors.min() < 1e-6 and errors.max() > math.pi - 1e-6  # a half turn counts fully


def test_the_discrete_estimator_study_scores_every_run_by_the_exact_bound(
    tmp_path, monkeypatch, small_balanced
):
    """Tiny settings: five runs (three estimators at equal steps, two at equal time), each
    put back into the enumerated model and scored by its exact bound."""
    from pyro_vae.studies import discrete_estimators
    from pyro_vae.studies.discrete_estimators import as_enumerated, exact_neg_elbo

    # the small set stands for the study's dataset, in training and where the runs are read
    small = dataclasses.replace(small_balanced, name="mnist-sample")
    monkeypatch.setattr(discrete_estimators, "load_dataset", lambda name: small)
    read = discrete_estimators.load_run
    monkeypatch.setattr(
        discrete_estimators, "load_run", lambda run_dir, **kw: read(run_dir, data=small, **kw)
    )
    out = tmp_path / "de"
    argv = ["study", "discrete-estimators", "--epochs", "1", "--hidden", "16", "--z-dim", "2",
            "--classes", "3", "--draws", "3", "--batch", "10", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((out / "discrete_estimators.json").read_text())["rows"]
    assert [(r["estimator"], r["budget"]) for r in rows] == [
        ("enumerate", "equal steps"), ("score", "equal steps"), ("score", "equal time"),
        ("relaxed", "equal steps"), ("relaxed", "equal time"),
    ]  # fmt: skip
    assert rows[0]["grad_bias"] == 0.0 and rows[3]["grad_bias"] > 0
    vae, run = as_enumerated(out / "relaxed")
    assert type(vae.discrete).__name__ == "Enumerated"
    assert torch.equal(run.data.test_x, small.test_x)  # its own test images
    assert torch.equal(vae.classifier[0].weight, run.vae.classifier[0].weight)
    assert exact_neg_elbo(vae, run.test_x) == pytest.approx(rows[3]["exact_neg_elbo"])
    assert (out / "discrete_estimators.png").exists()


def test_the_invariance_study_measures_pose_and_content(tmp_path, monkeypatch):
    from pyro_vae.studies import invariance

    full = rotated_mnist_sample()
    d = full.data
    small = dataclasses.replace(
        full,  # (standing for the study's dataset, mnist-rotated)
        data=ImageData(
            d.train_x[::10], d.train_y[::10], d.test_x[::10], d.test_y[::10], name=d.name
        ),
        train_angles=full.train_angles[::10],
        test_angles=full.test_angles[::10],
    )
    monkeypatch.setattr(invariance, "rotated_mnist_sample", lambda: small)
    out = tmp_path / "inv"
    argv = ["study", "invariance", "--epochs", "1", "--hidden", "8", "8", "--z-dim", "2",
            "--rotations", "4", "0", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((out / "invariance.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["invariant-r4", "invariant-r0", "vae"]
    assert [r["rotations"] for r in rows] == [4, 0, None]
    assert load_run(out / "invariant-r4", data=small.data).vae.rotations == 4
    for row in rows[:2]:
        assert -1 <= row["angle_correlation"] <= 1 and 0 <= row["angle_error_deg"] <= 180
        assert 0 <= row["within_30_deg"] <= 1 and -1 <= row["axis_correlation"] <= 1
    assert "angle_correlation" not in rows[2]
    assert rows[0]["latent_dims"] == rows[2]["latent_dims"] == 5
    assert all(0.1 <= r["knn_accuracy"] <= 1 for r in rows)  # chance is 0.1
    assert (out / "invariance.png").exists()


def test_the_semi_supervised_study_trains_m2_beside_the_labelled_only_classifier(
    tmp_path, monkeypatch, small_balanced
):
    """Tiny settings: one label budget, two seeds, two epochs; every M2 run is trained with
    the study's beta and its own seed's labels, and the table's means are the runs' own
    errors."""
    from pyro_vae.studies import semi_supervised

    monkeypatch.setattr(semi_supervised, "load_dataset", lambda name, data_dir=None: small_balanced)
    out = tmp_path / "ss"
    argv = ["study", "semi-supervised", "--labels", "20", "--seeds", "0", "1", "--epochs", "2",
            "--steps", "5", "--hidden", "16", "--z-dim", "2", "--beta", "2.5", "--out",
            str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    (row,) = json.loads((out / "semi_supervised.json").read_text())["rows"]
    assert row["labels"] == 20 and row["seeds"] == 2
    errors, late = [], []
    for seed in (0, 1):
        run = out / "mnist-sample" / "labels20" / f"seed{seed}"
        config = json.loads((run / "config.json").read_text())
        assert (config["beta"], config["labels"], config["seed"]) == (2.5, 20, seed)
        epochs = [float(r["test_error"]) for r in csv.DictReader(open(run / "metrics.csv"))]
        errors.append(epochs[-1])
        late.append(sum(epochs) / 2)  # both epochs are among the last five
    assert row["m2_errors"] == pytest.approx(errors)
    assert row["m2_late_errors"] == pytest.approx(late)
    assert row["m2_error"] == pytest.approx(sum(errors) / 2)
    assert all(0 <= e <= 1 for e in row["alone_errors"])
    assert (out / "semi_supervised.png").exists()


def test_the_clustering_study_scores_each_beta_by_its_runs_own_clusters(
    tmp_path, monkeypatch, small_balanced
):
    """Tiny settings: two betas; each row's accuracy is the best one-to-one matching of the
    run's own argmax q(c|x) on the test images to their digits, recomputed here."""
    from pyro_vae.studies import clustering
    from pyro_vae.training import load_run

    monkeypatch.setattr(clustering, "load_dataset", lambda name, data_dir=None: small_balanced)
    out = tmp_path / "cl"
    argv = ["study", "clustering", "--betas", "0.5", "4", "--epochs", "1", "--classes", "3",
            "--hidden", "16", "--z-dim", "2", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((out / "clustering.json").read_text())["rows"]
    assert [r["beta"] for r in rows] == [0.5, 4.0]
    for row in rows:
        run = load_run(Path(row["run"]), device="cpu", data=small_balanced)
        assert run.config.beta == row["beta"] and run.config.classes == 3
        assigned = run.vae.classify(run.test_x).argmax(-1)
        assert row["cluster_accuracy"] == pytest.approx(
            cluster_accuracy(assigned, small_balanced.test_y)
        )
    assert (out / "clustering.png").exists()
