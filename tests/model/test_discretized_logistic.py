"""The discretized logistic likelihood of 8-bit images: its masses, its hand-written reference,
its draws, the data it refuses, and a short run with it."""

from __future__ import annotations

import json
import math

import pytest
import torch
from support import make_vae, tiny_config

from pyro_vae import LIKELIHOODS, train
from pyro_vae.checks.reference_check import pyro_and_reference_loss
from pyro_vae.checks.reference_densities import LOG_LIKELIHOODS
from pyro_vae.inference.annealing import AnnealingSettings
from pyro_vae.inference.estimators import make_estimator
from pyro_vae.model.discretized_logistic import DiscretizedLogistic, eight_bit
from pyro_vae.model.likelihoods import DataSupportError
from pyro_vae.training.evaluate import evaluate_run, evaluation_line
from pyro_vae.training.metrics import summarize

NAME = "discretized-logistic"
LEVELS = torch.arange(256, dtype=torch.float64) / 255  # every value a pixel holds, 0 and 1 too
QUICK = AnnealingSettings(num_steps=5, chains=2, leapfrog_steps=1)
CASES = [(0.0, 0.0), (0.3, -3.0), (-0.95, -7.0), (0.999, 1.5), (2.5, -5.0), (-3.0, -1.0)]


def _masses(mu: float, log_s: float) -> torch.Tensor:
    """P(level k) of one pixel, k = 0..255, from the distribution."""
    d = DiscretizedLogistic(torch.full((256,), mu), torch.full((256,), log_s))
    return d.log_prob(LEVELS.to(torch.get_default_dtype())).exp()


def _sigmoid(t: float) -> float:
    return 1 / (1 + math.exp(-t))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_reference_is_the_distributions_log_prob(dtype):
    """Random mu (some outside [-1, 1]) and log s (some under the floor), each image holding
    every level once: the hand-written sum equals the distribution's, per image."""
    g = torch.Generator().manual_seed(0)
    lik = LIKELIHOODS.create(NAME, 256)
    loc = 3 * torch.rand(8, 256, generator=g, dtype=torch.float64) - 1.5
    log_s = 11 * torch.rand(8, 256, generator=g, dtype=torch.float64) - 9
    out = torch.cat([loc, log_s], -1)
    x = torch.stack([LEVELS[torch.randperm(256, generator=g)] for _ in range(8)])
    expected = LOG_LIKELIHOODS[NAME](lik, out, x)  # float64: the yardstick
    got = lik(out.to(dtype)).log_prob(x.to(dtype))
    assert got.dtype == dtype and torch.isfinite(got).all()
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(got.double(), expected, rtol=rtol, atol=0)


@pytest.mark.parametrize("mu,log_s", CASES)
def test_the_256_masses_sum_to_one(mu, log_s):
    total = float(_masses(mu, log_s).sum())
    assert total == pytest.approx(1.0, abs=1e-5)


def test_a_tiny_scale_puts_the_mass_in_the_central_bins(float64):
    """mu = 0 is the boundary between levels 127 and 128 (bin centres -+1/255): each gets
    sigma(0) - sigma(-2 / (255 s)), at once 1/2 as s -> 0. The likelihood floors log s at -7."""
    p = _masses(0.0, -30.0)
    assert float(p[127]) == pytest.approx(0.5, abs=1e-12)
    assert float(p[128]) == pytest.approx(0.5, abs=1e-12)
    assert float(p.sum() - p[127] - p[128]) < 1e-12
    lik = LIKELIHOODS.create(NAME, 256)
    p = lik(torch.cat([torch.zeros(256), torch.full((256,), -30.0)])).base_dist
    p = p.log_prob(LEVELS).exp()
    central = _sigmoid(0.0) - _sigmoid(-2 / 255 * math.exp(7))
    assert float(p[127]) == pytest.approx(central, rel=1e-12)
    assert float(p[128]) == pytest.approx(central, rel=1e-12)
    # mu on a level's centre: that level holds sigma(h / s) - sigma(-h / s) = tanh(h / 2s)
    q = _masses(2 * 40 / 255 - 1, -6.0)
    assert float(q[40]) == pytest.approx(math.tanh(math.exp(6) / 255 / 2), rel=1e-12)


@pytest.mark.parametrize("mu,log_s", [(0.0, -3.0), (0.9, -2.0), (-1.2, -4.0), (0.2, 0.5)])
def test_draws_follow_the_masses(mu, log_s):
    """200,000 draws of one pixel: on the levels, each level's share within 5 standard errors of
    its mass (the edge bins, which take the tails, among them)."""
    torch.manual_seed(3)
    n = 200_000
    d = DiscretizedLogistic(torch.tensor(mu), torch.tensor(log_s))
    draws = d.sample((n,))
    assert bool(eight_bit.check(draws).all())
    counts = torch.bincount(torch.round(draws * 255).long(), minlength=256).double()
    p = _masses(mu, log_s).double()
    stderr = (p * (1 - p) / n).sqrt()
    assert bool(((counts / n - p).abs() <= 5 * stderr + 1e-6).all())


def test_check_data_takes_8_bit_levels_and_refuses_the_rest():
    lik = LIKELIHOODS.create(NAME, 4)
    lik.check_data(torch.tensor([[0.0, 1 / 255, 128 / 255, 1.0]]))
    lik.check_data(torch.tensor([[0.0, 1 / 255 + 5e-5, 128 / 255, 1.0 - 5e-5]]))  # tolerance
    for bad in [0.5, 1 / 255 + 5e-4, -1 / 255, 256 / 255]:
        with pytest.raises(DataSupportError, match=r"k/255.*--binarize none") as err:
            lik.check_data(torch.tensor([[0.0, bad, 1.0, 1.0]]))
        assert "\n" not in str(err.value)
    with pytest.raises(DataSupportError, match="NaN"):
        lik.check_data(torch.tensor([[0.0, float("nan"), 1.0, 1.0]]))


def test_the_mean_is_the_expected_level(float64):
    lik = LIKELIHOODS.create(NAME, 1)
    for mu, log_s in CASES:
        out = torch.tensor([mu, log_s])
        expected = float((_masses(mu, log_s) * LEVELS).sum())
        assert float(lik.mean(out)) == pytest.approx(expected, abs=1e-12)
        assert 0 <= float(lik.mean(out)) <= 1


@pytest.mark.parametrize("estimator", ["trace", "mean-field"])
def test_pyro_loss_equals_the_hand_written_one_on_8_bit_images(float64, estimator):
    """The VAE's loss on images at every level (x = 0 and x = 1 among them)."""
    vae = make_vae(NAME, "normal")
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 256, (4, 784), generator=g).double() / 255
    x[:, :2] = torch.tensor([0.0, 1.0])
    pyro_loss, ref_loss = pyro_and_reference_loss(vae, make_estimator(estimator), x)
    torch.testing.assert_close(pyro_loss, ref_loss, rtol=1e-9, atol=0)


def test_a_run_reports_bits_per_dim(small_data, tmp_path):
    """A run of one epoch checks its first batch against the reference and reports the test
    -ELBO in bits per dimension: nats / (784 ln 2), with no offset (a mass over 256 levels)."""
    config = tiny_config(tmp_path, likelihood=NAME, epochs=1, tensorboard=False)
    summary = train(config, small_data).summary
    assert summary["reference_check"]["check"] == "hand-written"
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["test_bits_per_dim"] == pytest.approx(
        saved["test_neg_elbo"] / (784 * math.log(2)), rel=1e-12
    )
    assert 0 < saved["test_bits_per_dim"] < 8
    # pyro-vae evaluate: bits/dim beside the -ELBO, IS and AIS estimates of log p(x)
    r = evaluate_run(tmp_path / "run", 4, "cpu", max_images=16, progress=False, data=small_data)
    r = evaluate_run(
        tmp_path / "run",
        method="ais",
        annealing=QUICK,
        max_images=16,
        progress=False,
        data=small_data,
    )
    per_value = 784 * math.log(2)
    assert r["test_bits_per_dim"] == pytest.approx(r["test_neg_elbo"] / per_value, rel=1e-12)
    is_bits = r["test_log_likelihood_bits_per_dim"]
    assert is_bits == pytest.approx(-r["test_log_likelihood"] / per_value, rel=1e-12)
    ais_bits = r["ais"]["bits_per_dim"]
    assert ais_bits == pytest.approx(-r["ais"]["test_log_likelihood"] / per_value, rel=1e-12)
    assert "bits/dim" in evaluation_line(r, "is") and "bits/dim" in evaluation_line(r, "ais")


def test_only_a_likelihood_of_8_bit_data_reports_bits_per_dim():
    row = {"epoch": 1, "train_seconds": 1.0, "test_neg_elbo": 543.5, "test_distortion": 500.0}
    row |= {"test_rate": 43.5, "train_neg_elbo": 540.0}
    for name in LIKELIHOODS.names():
        summary = summarize([row], 10, 10, torch.device("cpu"), LIKELIHOODS.create(name, 784))
        assert ("test_bits_per_dim" in summary) == (name == NAME)
    assert "test_bits_per_dim" not in summarize([row], 10, 10, torch.device("cpu"))
    bits = summarize([row], 10, 10, torch.device("cpu"), LIKELIHOODS.create(NAME, 784))
    assert bits["test_bits_per_dim"] == pytest.approx(543.5 / (784 * math.log(2)))
