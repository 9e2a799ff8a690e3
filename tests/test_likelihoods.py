from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch

from pyro_vae import LIKELIHOODS
from pyro_vae.likelihoods import DataSupportError, GaussianLearned
from pyro_vae.reference import LOG_LIKELIHOODS, continuous_bernoulli_log_normalizer


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_event_shape_and_mean(name):
    lik = LIKELIHOODS.create(name, 784)
    out = torch.randn(5, lik.params_per_pixel * 784)
    d = lik(out)
    assert d.batch_shape == (5,) and d.event_shape == (784,)
    assert lik.mean(out).shape == (5, 784)


@pytest.mark.parametrize("logit", [-30.0, -4.0, -0.5, -1e-3, 0.0, 1e-5, 0.3, 7.0])
def test_continuous_bernoulli_normaliser_makes_a_density(float64, logit):
    """C(lambda) * lambda^x (1-lambda)^(1-x) integrates to 1 over [0, 1] (Simpson's rule)."""
    eta = torch.tensor(logit)
    x = torch.linspace(0, 1, 20001)
    log_density = (
        x * eta - torch.nn.functional.softplus(eta) + (continuous_bernoulli_log_normalizer(eta))
    )
    w = torch.ones_like(x)
    w[1:-1:2], w[2:-1:2] = 4, 2
    integral = float((w * log_density.exp()).sum() * (x[1] - x[0]) / 3)
    assert integral == pytest.approx(1.0, abs=1e-9)
    # and the hand-written normaliser is torch's
    torch_lp = dist.ContinuousBernoulli(logits=eta).log_prob(torch.tensor(0.3))
    ref_lp = LOG_LIKELIHOODS["continuous-bernoulli"](None, eta.reshape(1), torch.tensor([0.3]))
    assert float(ref_lp) == pytest.approx(float(torch_lp), rel=1e-9, abs=1e-12)


def test_bernoulli_rejects_grey_levels_with_advice():
    lik = LIKELIHOODS.create("bernoulli", 4)
    lik.check_data(torch.tensor([[0.0, 1.0, 1.0, 0.0]]))
    with pytest.raises(DataSupportError, match="binarize"):
        lik.check_data(torch.tensor([[0.0, 0.5, 1.0, 0.0]]))


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_non_finite_data_is_rejected(name):
    with pytest.raises(DataSupportError, match="NaN"):
        LIKELIHOODS.create(name, 2).check_data(torch.tensor([[0.0, float("nan")]]))


def test_continuous_bernoulli_rejects_values_outside_unit_interval():
    with pytest.raises(DataSupportError, match=r"\[0, 1\]"):
        LIKELIHOODS.create("continuous-bernoulli", 2).check_data(torch.tensor([[0.0, 255.0]]))


def test_gaussian_needs_positive_sigma():
    with pytest.raises(ValueError, match="sigma"):
        LIKELIHOODS.create("gaussian", 4, sigma=0.0)
    with pytest.raises(ValueError, match="sigma_floor"):
        LIKELIHOODS.create("gaussian-learned", 4, sigma_floor=0.0)


def test_learned_sigma_floor_bounds_the_likelihood():
    """The unbounded-ELBO failure: a pixel predicted exactly lets sigma -> 0, log p -> inf.

    Gradient ascent on log p(x|z) for perfectly predicted pixels drives the raw parameter down
    without limit; the floor keeps sigma >= sigma_floor and log p(x|z) <= its bound, finite.
    """
    floor = 0.05
    lik = GaussianLearned(data_dim=10, sigma_floor=floor)
    x = torch.zeros(8, 10)
    mean = torch.zeros(8, 10)  # a decoder that reconstructs these pixels exactly
    opt = torch.optim.Adam(lik.parameters(), lr=0.5)
    for _ in range(500):
        loss = -lik(mean).log_prob(x).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    sigma = lik.sigma().detach()
    assert float(lik.raw_sigma.detach().max()) < -10  # the optimiser did push sigma towards 0
    assert torch.all(sigma >= floor) and torch.all(sigma < floor * 1.001)
    log_p = lik(mean).log_prob(x).detach()
    bound = lik.log_prob_bound()
    assert bound == pytest.approx(-10 * math.log(floor * math.sqrt(2 * math.pi)))
    assert torch.all(torch.isfinite(log_p)) and torch.all(log_p <= bound + 1e-4)
    assert float(log_p[0]) == pytest.approx(bound, rel=1e-4)  # it reached the floor, no further


def test_learned_sigma_starts_at_sigma_init():
    lik = GaussianLearned(data_dim=3, sigma_floor=0.01, sigma_init=0.2)
    torch.testing.assert_close(lik.sigma(), torch.full((3,), 0.2))
