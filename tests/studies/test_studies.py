"""The studies behind issue-sized claims: gradient SNR, pyro-vae evaluate, pyro-vae compare."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from support import trained_run

from pyro_vae.checks.linear_gaussian import LinearGaussian
from pyro_vae.cli import main
from pyro_vae.inference.annealing import AnnealingSettings
from pyro_vae.studies.estimators import ESTIMATOR_SET, compare
from pyro_vae.studies.gradient_snr import gradient_snr
from pyro_vae.studies.harness import ais_or_reuse
from pyro_vae.training import RunDirectoryError
from pyro_vae.training import run_dir as runs


def test_gradient_snr_trends_follow_rainforth_and_tucker():
    """Standard IWAE: encoder SNR falls as K grows, decoder SNR rises; DReG's encoder SNR
    stays far above it; decoder gradients are the same for every estimator."""
    lg = LinearGaussian().perturbed(0.3)
    x = lg.sample(4)
    groups = {"encoder": lg.encoder_parameters(), "decoder": [lg.W, lg.b]}
    snr = gradient_snr(lg.model, lg.guide, x, groups, particles=[1, 30], draws=200)
    vec = {e: {g: snr[e][g]["vector"] for g in groups} for e in snr}
    assert vec["standard"]["encoder"][1] < 0.5 * vec["standard"]["encoder"][0]
    assert vec["dreg"]["encoder"][1] > 2 * vec["standard"]["encoder"][1]  # 2.8x measured
    assert vec["standard"]["decoder"][1] > 2 * vec["standard"]["decoder"][0]
    for est in ("stl", "dreg"):
        for summary in ("param", "vector"):
            got, want = snr[est]["decoder"][summary], snr["standard"]["decoder"][summary]
            assert got == pytest.approx(want, rel=1e-9)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    return trained_run(tmp_path_factory.mktemp("evaluate") / "run", "--z-dim", "6")


def test_evaluate_writes_log_px_above_the_elbo(small_run, capsys):
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                str(small_run),
                "--num-samples",
                "200",
                "--max-images",
                "300",
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "test log p(x)" in printed and "active units" in printed
    r = json.loads((small_run / "evaluation.json").read_text())
    assert r["num_images"] == 300 and r["num_samples"] == 200
    assert all(math.isfinite(r[k]) for k in ["test_log_likelihood", "test_neg_elbo"])
    # IWAE_200 is a tighter bound than the ELBO, on the same images
    assert r["test_log_likelihood"] > -r["test_neg_elbo"] + 1.0
    assert 0 <= r["active_units"] <= 6 and len(r["activity_per_dim"]) == 6
    assert sum(r["kl_per_dim"]) == pytest.approx(r["test_rate"], rel=1e-4)


def test_evaluate_errors_are_one_line(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_compare_trains_evaluates_and_reuses(tmp_path):
    chosen = [e for e in ESTIMATOR_SET if e.label in ("TraceMeanField_ELBO", "IWAE k=5 DReG")]
    kwargs = dict(
        dataset="mnist-sample",
        epochs=1,
        betas=[1.0, 4.0],
        estimators=chosen,
        out=tmp_path,
        num_samples=20,
        max_images=100,
        hidden=(32,),
        z_dim=4,
        progress=False,
    )
    rows = compare(**kwargs)
    assert [(r["estimator"], r["beta"]) for r in rows] == [
        ("TraceMeanField_ELBO", 1.0),
        ("IWAE k=5 DReG", 1.0),
        ("TraceMeanField_ELBO", 4.0),
        ("IWAE k=5 DReG", 4.0),
    ]
    for r in rows:
        assert r["test_log_likelihood"] > -r["test_neg_elbo"]  # IWAE_20 above the ELBO
    table = (tmp_path / "estimators.md").read_text()
    assert "| IWAE k=5 DReG | 4 |" in table
    assert (tmp_path / "estimators.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "estimators.json").read_text())
    assert len(saved["rows"]) == 4
    # a second call reuses the finished runs
    checkpoint = tmp_path / "iwae-k5-dreg-beta4" / runs.CHECKPOINT
    before = checkpoint.stat().st_mtime_ns
    assert compare(**kwargs) == rows
    assert checkpoint.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="other options"):
        compare(**(kwargs | {"epochs": 2}))


def test_compare_adds_ais_on_the_same_images_and_ranks_by_both(tmp_path):
    """With annealing, each cell also gets AIS log p(x) on the images IS used, IS - AIS and
    its estimator's rank by each; a second call reuses both evaluations."""
    chosen = [e for e in ESTIMATOR_SET if e.label in ("VR-0.5 k=5", "MIWAE M=4 k=5")]
    kwargs = dict(
        dataset="mnist-sample", epochs=1, betas=[1.0], estimators=chosen, out=tmp_path,
        num_samples=20, max_images=30, hidden=(32,), z_dim=4, progress=False,
        annealing=AnnealingSettings(num_steps=30, chains=2, leapfrog_steps=2),
    )  # fmt: skip
    rows = compare(**kwargs)
    for r in rows:
        assert r["is_minus_ais"] == pytest.approx(
            r["test_log_likelihood"] - r["test_log_likelihood_ais"]
        )
        saved = json.loads((Path(r["run"]) / runs.EVALUATION).read_text())
        assert saved["num_images"] == 30 and saved["num_samples"] == 20  # IS kept beside AIS
        assert saved["ais"]["test_log_likelihood"] == r["test_log_likelihood_ais"]
    assert sorted(r["rank_is"] for r in rows) == [1, 2] == sorted(r["rank_ais"] for r in rows)
    assert json.loads((Path(rows[1]["run"]) / runs.CONFIG).read_text())["groups"] == 4
    assert "| IS - AIS | rank (IS) | rank (AIS) |" in (tmp_path / "estimators.md").read_text()
    evaluation = Path(rows[0]["run"]) / runs.EVALUATION
    before = evaluation.stat().st_mtime_ns
    assert compare(**kwargs) == rows
    assert evaluation.stat().st_mtime_ns == before


def test_ais_is_reused_only_with_the_settings_it_was_measured_with(tmp_path):
    """An evaluation.json's ais block is reused when every setting it records is the one
    asked for (a block written before a setting was recorded counts as made at its default);
    with another setting AIS is measured anew (here there is no run to measure: the error)."""
    block = {"steps": 30, "chains": 2, "leapfrog": 2, "initial": "guide", "seconds": 1.0}
    (tmp_path / runs.EVALUATION).write_text(json.dumps({"max_images": 30, "ais": block}))
    settings = AnnealingSettings(num_steps=30, chains=2, leapfrog_steps=2)
    assert ais_or_reuse(tmp_path, 30, settings) == block
    for other in (replace(settings, step_size=0.2), replace(settings, num_steps=31)):
        with pytest.raises(RunDirectoryError, match="not a run directory"):
            ais_or_reuse(tmp_path, 30, other)


def test_iwae_training_from_the_cli(tmp_path):
    out = tmp_path / "iwae"
    assert (
        main(
            [
                "train",
                "--estimator",
                "iwae",
                "--particles",
                "3",
                "--grad",
                "dreg",
                "--epochs",
                "1",
                "--hidden",
                "32",
                "--z-dim",
                "4",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((out / runs.SUMMARY).read_text())
    rc = summary["reference_check"]
    assert rc["pyro_loss"] == pytest.approx(rc["reference_loss"], rel=1e-4)
    assert main(["train", "--estimator", "trace", "--grad", "dreg", "--out", str(out / "x")]) == 2


def test_latent_coverage_measures_overlap_with_the_prior():
    from pyro_vae.studies.ae_vs_vae import latent_coverage

    g = torch.Generator().manual_seed(0)
    like_prior = torch.randn(1000, 3, generator=g)
    cov = latent_coverage(like_prior)
    assert 0.97 < cov["codes_in_prior"] <= 1.0 and cov["prior_near_codes"] > 0.9
    far = latent_coverage(like_prior + 10.0)
    assert far["codes_in_prior"] == 0.0 and far["prior_near_codes"] == 0.0
    squeezed = latent_coverage(0.05 * like_prior)  # all codes in a small blob at the origin
    assert squeezed["codes_in_prior"] == 1.0 and squeezed["prior_near_codes"] < 0.05


def test_small_studies_write_their_tables(tmp_path):
    from pyro_vae import TrainConfig
    from pyro_vae.studies.ae_vs_vae import ae_vs_vae
    from pyro_vae.studies.beta_sweep import beta_sweep
    from pyro_vae.studies.posterior_collapse import posterior_collapse

    base = TrainConfig(epochs=1, hidden=(32,), z_dim=4, progress=False)
    rows = beta_sweep(tmp_path / "sweep", [0.0, 4.0], base)
    assert rows[0]["rate"] > rows[1]["rate"]  # no KL pressure at beta = 0
    assert (tmp_path / "sweep" / "rate_distortion.png").exists()
    assert "| 4 |" in (tmp_path / "sweep" / "beta_sweep.md").read_text()
    rows = ae_vs_vae(tmp_path / "ae", base, draws=50)
    assert [r["model"] for r in rows] == ["autoencoder", "VAE"]
    assert all(0 <= r["codes_in_prior"] <= 1 for r in rows)
    assert (tmp_path / "ae" / "random_codes.png").exists()
    rows = posterior_collapse(tmp_path / "collapse", base)
    assert len(rows) == 5 and all(0 <= r["informative_dims"] <= 4 for r in rows)
    assert (tmp_path / "collapse" / "active_units.png").exists()


def test_pixel_frechet_distance():
    from pyro_vae.studies.ae_vs_vae import pixel_frechet_distance

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2000, 16, generator=g)
    b = torch.rand(2000, 16, generator=g)
    same = pixel_frechet_distance(a, b)
    assert 0 <= same < 0.05
    faint = pixel_frechet_distance(0.3 * a, b)  # dim images: wrong mean and spread
    assert faint > 20 * same
    shifted = pixel_frechet_distance(a + 1.0, b)
    assert shifted == pytest.approx(16.0, rel=0.02)  # ||mean shift||^2


def test_model_comparison_trains_measures_and_tabulates(tmp_path):
    from pyro_vae.studies.models import VARIANTS, compare_models

    chosen = [v for v in VARIANTS if v.slug in ("vae", "iaf", "two-layer-iwae5")]
    rows = compare_models(
        "mnist-sample",
        1,
        chosen,
        tmp_path,
        num_samples=20,
        max_images=50,
        hidden=(32,),
        z_dim=4,
        progress=False,
    )
    assert [r["variant"] for r in rows] == [v.label for v in chosen]
    assert rows[2]["estimator"] == "iwae k=5 dreg" and rows[2]["z_dim"] == 100
    for r in rows:
        assert r["test_log_likelihood"] > -r["test_neg_elbo"]  # IWAE_20 above the ELBO
    table = (tmp_path / "models.md").read_text()
    assert "| VAE (core) | mean-field |" in table and "+0.00" in table
    assert (tmp_path / "models.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "args, needle",
    [
        (["gradient-snr", "--draws", "1"], "argument --draws: must be a finite number >= 2"),
        (["ae-vs-vae", "--draws", "many"], "argument --draws: not a number: 'many'"),
        (["models", "--num-samples", "0"], "argument --num-samples: must be a finite number >= 1"),
    ],
)
def test_a_studys_own_counts_are_checked_before_it_starts(args, needle, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["study", *args])
    assert stop.value.code == 2 and needle in capsys.readouterr().err
