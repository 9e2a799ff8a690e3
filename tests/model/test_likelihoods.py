from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch

from pyro_vae import LIKELIHOODS
from pyro_vae.checks.reference_densities import LOG_LIKELIHOODS
from pyro_vae.densities import continuous_bernoulli_log_normalizer
from pyro_vae.model.likelihoods import DataSupportError, GaussianLearned


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_event_shape_and_mean(name):
    lik = LIKELIHOODS.create(name, 784)
    out = torch.randn(5, lik.params_per_pixel * 784)
    d = lik(out)
    assert d.batch_shape == (5,) and d.event_shape == (784,)
    assert lik.mean(out).shape == (5, 784)
    # E[x | z], what reconstructions and samples show, is the family's mean: 200,000 draws
    small = LIKELIHOODS.create(name, 6)
    out = torch.randn(1, small.params_per_pixel * 6, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    draws = small(out).sample((200_000,)).double()
    stderr = draws.std(0) / 200_000**0.5
    gap = (small.mean(out).double() - draws.mean(0)).abs()
    assert bool((gap <= 5 * stderr + 1e-9).all()), (gap / stderr).max()


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


# --- laplace, beta ------------------------------------------------------------------------


def test_laplace_scale_floor_bounds_the_likelihood():
    lik = LIKELIHOODS.create("laplace", 5, sigma_floor=0.05)
    with torch.no_grad():
        lik.scale.raw.fill_(-50.0)  # the scale pushed to its floor
    x = torch.zeros(2, 5)
    log_p = lik(torch.zeros(2, 5)).log_prob(x)
    assert lik.log_prob_bound() == pytest.approx(-5 * math.log(2 * 0.05))
    torch.testing.assert_close(log_p, torch.full((2,), lik.log_prob_bound()))


def test_beta_is_a_density_on_the_closed_unit_interval(float64):
    """p(x|z) is finite at 0 and 1 and integrates to 1 over [-d, 1 + d], d = eps / (1 - 2 eps);
    on [0, 1] alone to less than 1."""
    eps = 0.01
    lik = LIKELIHOODS.create("beta", 1, beta_squeeze=eps)
    out = torch.tensor([1.5, 1.0])  # concentrations softplus(.) + 1e-3, both > 1
    d = eps / (1 - 2 * eps)
    x = torch.linspace(-d, 1 + d, 400001).unsqueeze(-1)
    density = lik(out).base_dist.log_prob(x).exp().squeeze(-1)
    assert torch.isfinite(density).all()
    assert float(torch.trapezoid(density, x.squeeze(-1))) == pytest.approx(1.0, abs=1e-6)
    inside = (x.squeeze(-1) >= 0) & (x.squeeze(-1) <= 1)
    assert float(torch.trapezoid(density[inside], x.squeeze(-1)[inside])) < 1 - 1e-3
    mean_x = float(torch.trapezoid(density * x.squeeze(-1), x.squeeze(-1)))
    assert float(lik.mean(out)) == pytest.approx(mean_x, abs=1e-6)
    a, b = lik.concentrations(out)
    assert float(a / (a + b)) != pytest.approx(mean_x, abs=1e-4)  # the map moved the mean


def test_beta_rejects_values_outside_unit_interval():
    with pytest.raises(DataSupportError, match=r"\[0, 1\]"):
        LIKELIHOODS.create("beta", 2).check_data(torch.tensor([[0.0, 1.5]]))
    with pytest.raises(ValueError, match="beta_squeeze"):
        LIKELIHOODS.create("beta", 2, beta_squeeze=0.5)


# --- counts -----------------------------------------------------------------------------------

COUNT_FAMILIES = ["poisson", "negative-binomial", "zero-inflated-negative-binomial"]


@pytest.mark.parametrize("name", COUNT_FAMILIES)
def test_counts_must_be_non_negative_integers(name):
    lik = LIKELIHOODS.create(name, 3)
    lik.check_data(torch.tensor([[0.0, 4.0, 120.0]]))
    with pytest.raises(DataSupportError, match="non-negative integer"):
        lik.check_data(torch.tensor([[0.0, 2.5, 1.0]]))
    with pytest.raises(DataSupportError, match="non-negative integer"):
        lik.check_data(torch.tensor([[0.0, -1.0, 1.0]]))
    observed = LIKELIHOODS.create(name, 3, library="observed")
    with pytest.raises(DataSupportError, match="all zero"):
        observed.check_data(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="library"):
        LIKELIHOODS.create(name, 3, library="size-factor")


@pytest.mark.parametrize("name", COUNT_FAMILIES)
def test_observed_library_size_scales_the_mean(float64, name):
    """library='observed': mu = l * softmax(decoder), so the means sum to the library size
    (times 1 - pi under zero inflation) and scaling the counts scales the means."""
    lik = LIKELIHOODS.create(name, 4, library="observed")
    out = torch.randn(2, lik.params_per_pixel * 4)
    x = torch.tensor([[3.0, 0.0, 5.0, 2.0], [100.0, 40.0, 0.0, 60.0]])
    mu = lik(out, x).mean
    torch.testing.assert_close(lik.mean(out, x), mu)
    if name == "zero-inflated-negative-binomial":
        mu = mu / torch.sigmoid(-lik.gate_logits(out))
    torch.testing.assert_close(mu.sum(-1), x.sum(-1))
    torch.testing.assert_close(lik(out, 2 * x).mean, 2 * lik(out, x).mean)
    # without an observation (sampling from the prior) the means are proportions
    torch.testing.assert_close(
        LIKELIHOODS.get("poisson")(4, library="observed").mean(out[:, :4]).sum(-1),
        torch.ones(2, dtype=torch.float64),
    )


def test_negative_binomial_moments_and_its_poisson_limit(float64):
    """Mean mu = exp(out), variance mu + mu^2 / theta; theta -> inf gives the Poisson."""
    nb = LIKELIHOODS.create("negative-binomial", 3)
    with torch.no_grad():
        nb.log_theta.copy_(torch.tensor([-1.0, 0.5, 2.0]))
    out = torch.tensor([[0.3, 2.0, -1.0]])
    mu, theta = out.exp(), nb.theta()
    torch.testing.assert_close(nb(out).base_dist.mean, mu)
    torch.testing.assert_close(nb(out).base_dist.variance, mu + mu**2 / theta)
    x = torch.tensor([[0.0, 7.0, 1.0]])
    poisson = LIKELIHOODS.create("poisson", 3)(out).log_prob(x)
    gaps = []
    for log_theta in (6.0, 9.0, 12.0):  # the gap is O(mu^2 / theta)
        with torch.no_grad():
            nb.log_theta.fill_(log_theta)
        gaps.append(float((nb(out).log_prob(x) - poisson).abs().detach()))
    assert gaps[2] < 1e-3 and gaps[1] < gaps[0] / 10 and gaps[2] < gaps[1] / 10


def test_zero_inflation_adds_mass_at_zero_only(float64):
    zinb = LIKELIHOODS.create("zero-inflated-negative-binomial", 2)
    nb = LIKELIHOODS.create("negative-binomial", 2)
    log_mu = torch.tensor([1.0, 0.5])
    gate = torch.tensor([0.0, -40.0])  # pi = 1/2 for the first feature, ~0 for the second
    out = torch.cat([log_mu, gate])
    x = torch.tensor([[0.0, 0.0], [3.0, 3.0]])
    z_lp, nb_lp = zinb(out).base_dist.log_prob(x), nb(log_mu).base_dist.log_prob(x)
    # x = 0: log(pi + (1 - pi) NB(0)); x > 0: log(1 - pi) + log NB(x)
    torch.testing.assert_close(z_lp[0, 0], torch.log(0.5 + 0.5 * nb_lp[0, 0].exp()))
    torch.testing.assert_close(z_lp[1, 0], math.log(0.5) + nb_lp[1, 0])
    torch.testing.assert_close(z_lp[:, 1], nb_lp[:, 1])
