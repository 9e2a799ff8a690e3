"""``pyro-vae evaluate --method is|ais|bdmc`` on a tiny trained run, and the AIS study: what
each writes, that methods measured at the same epoch on the same images are kept side by side,
and that the estimates order as they must."""

from __future__ import annotations

import json
import math

import pytest
from support import saved_data, tiny_config

from pyro_vae.cli import main
from pyro_vae.inference.annealing import AnnealingSettings
from pyro_vae.studies.ais_convergence import linear_gaussian_curve
from pyro_vae.training import evaluate_run, fit
from pyro_vae.training import run_dir as runs

QUICK = AnnealingSettings(num_steps=100, chains=4, leapfrog_steps=2)


@pytest.fixture
def trained(tmp_path, small_data):
    fit(tiny_config(tmp_path, tensorboard=False), small_data)
    return tmp_path / "run"


@pytest.fixture
def file_run(tmp_path, small_data):
    """The tiny run trained on ``small_data`` saved as a file, which a command reads again."""
    path = saved_data(tmp_path / "small.npz", small_data)
    fit(tiny_config(tmp_path, data=str(path), tensorboard=False))
    return tmp_path / "run"


def test_ais_is_kept_beside_importance_sampling(trained, small_data):
    """IS then AIS on the same 40 images: evaluation.json holds both; AIS with 100 steps is
    at least as tight as IS with the same 4 samples per image would be, and near IS with 5000
    (within 0.2 nats on this run; IS with 500 is a nat lower)."""
    common = dict(device="cpu", max_images=40, progress=False, data=small_data)
    first = evaluate_run(trained, 5000, **common)
    second = evaluate_run(trained, method="ais", annealing=QUICK, **common)
    saved = json.loads((trained / runs.EVALUATION).read_text())
    assert saved == json.loads(json.dumps(second))
    assert saved["test_log_likelihood"] == first["test_log_likelihood"]  # kept, not redone
    assert saved["num_samples"] == 5000
    assert second["test_neg_elbo"] == first["test_neg_elbo"]  # the same noise for every method
    ais = saved["ais"]
    assert {ais["steps"], ais["chains"], ais["leapfrog"]} == {100, 4, 2}
    assert (ais["schedule"], ais["step_size"], ais["target_accept"]) == ("sigmoid", 0.05, 0.65)
    assert 1 <= ais["ess_mean"] <= 4 and 0 < ais["acceptance_mean"] <= 1
    few = evaluate_run(trained, 4, **common)["test_log_likelihood"]
    assert ais["test_log_likelihood"] > few + 0.5  # annealing beats 4 importance samples
    assert abs(ais["test_log_likelihood"] - first["test_log_likelihood"]) < 1.0
    assert math.isfinite(ais["test_log_likelihood_stderr"])


def test_another_image_set_starts_a_new_evaluation(trained, small_data):
    common = dict(device="cpu", progress=False, data=small_data)
    evaluate_run(trained, 50, max_images=20, **common)
    result = evaluate_run(trained, max_images=10, method="ais", annealing=QUICK, **common)
    assert "test_log_likelihood" not in result and result["num_images"] == 10


def test_bdmc_brackets_log_px_of_simulated_images(trained, small_data):
    result = evaluate_run(
        trained, device="cpu", max_images=20, progress=False, data=small_data,
        method="bdmc",
        annealing=AnnealingSettings(num_steps=200, chains=4, leapfrog_steps=2, simulated=15),
    )  # fmt: skip
    b = result["bdmc"]
    assert b["simulated"] == 15 and result["num_images"] == 20
    assert b["lower"] <= b["upper"] + 0.05  # lower <= log p(x) <= upper, up to noise
    assert 0 <= b["gap"] < 1.0 and b["gap_max"] >= b["gap"]


def test_the_command_prints_the_method_and_refuses_an_autoencoder(
    tmp_path, small_data, file_run, capsys
):
    code = main(
        ["evaluate", str(file_run), "--method", "ais", "--ais-steps", "20", "--chains", "2",
         "--max-images", "5", "--no-progress", "--device", "cpu"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "(AIS, T=20, 2 chains, 2 leapfrog steps, 5 images" in out
    fit(tiny_config(tmp_path / "ae", autoencoder=True, tensorboard=False), small_data)
    with pytest.raises(ValueError, match="needs a VAE"):
        evaluate_run(tmp_path / "ae" / "run", method="bdmc", device="cpu", data=small_data)
    assert main(["evaluate", str(file_run), "--method", "ais", "--chains", "0"]) == 2


def test_the_study_curve_converges_to_the_exact_value():
    """Linear-Gaussian model: AIS from the perturbed guide is far off with one step and within
    a tenth of a nat with 300; BDMC's bounds close in on the exact value from both sides."""
    first, last = linear_gaussian_curve([1, 300], images=10, chains=4, leapfrog=2)
    assert first["ais_guide_error"] < -3 and abs(last["ais_guide_error"]) < 0.1
    assert last["bdmc_lower_error"] < 0.05 and last["bdmc_upper_error"] > -0.05
    assert last["bdmc_gap"] < 0.5 * first["bdmc_gap"]


def test_compiled_importance_sampling_gives_the_same_estimate(file_run):
    """``--compile`` on the command line: the same log p(x) to 1e-6 for the same seed, and
    evaluation.json says which ran; by default a small evaluation stays eager."""
    eager = evaluate_run(file_run, 300, device="cpu", max_images=10, progress=False)
    assert eager["compiled"] is False
    args = ["evaluate", str(file_run), "--num-samples", "300", "--max-images", "10", "--compile"]
    assert main([*args, "--no-progress"]) == 0
    compiled = json.loads((file_run / runs.EVALUATION).read_text())
    assert compiled["compiled"] is True
    assert compiled["test_log_likelihood"] == pytest.approx(eager["test_log_likelihood"], rel=1e-6)
    assert compiled["test_neg_elbo"] == eager["test_neg_elbo"]
