"""Evaluation on a linear-Gaussian model, whose log p(x) and exact posterior are closed form.

    z ~ N(0, I_d),   x | z ~ N(W z + b, s^2 I_D),   W with orthogonal columns

so the posterior N(m(x), S) is diagonal: S = (I + W^T W / s^2)^-1, m(x) = S W^T (x - b) / s^2,
and log p(x) = log N(x; b, W W^T + s^2 I). With the guide set to that posterior, every single
sample gives ELBO(x) = log p(x): the estimate must be exact, with zero variance.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae.evaluation import elbo_terms_per_image, evaluate_elbo

D, d, S = 6, 2, 0.5


@pytest.fixture
def linear_gaussian(float64):
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, d))
    W = q * torch.tensor([2.0, 0.7])  # orthogonal columns, different lengths
    b = torch.randn(D)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(d), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + b, S).to_event(1), obs=x)

    post_var = 1.0 / (1.0 + (W**2).sum(0) / S**2)

    def exact_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample(
                "z", dist.Normal(post_var * ((x - b) @ W) / S**2, post_var.sqrt()).to_event(1)
            )

    def poor_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], d), 1.0).to_event(1))

    marginal = dist.MultivariateNormal(b, W @ W.T + S**2 * torch.eye(D))
    x = marginal.sample((400,))
    return model, exact_guide, poor_guide, x, marginal.log_prob(x)


def test_exact_posterior_gives_log_px_with_zero_variance(linear_gaussian):
    """Monte Carlo KL: log p(x, z) - log q(z|x) = log p(x) at every z from the exact posterior."""
    model, exact_guide, _, x, log_px = linear_gaussian
    for _ in range(3):
        log_lik, kl = elbo_terms_per_image(model, exact_guide, x, analytic_kl=False)
        torch.testing.assert_close(log_lik - kl, log_px, rtol=1e-10, atol=1e-10)
    terms = evaluate_elbo(model, exact_guide, x, batch_size=64, analytic_kl=False)
    assert terms.neg_elbo == pytest.approx(-float(log_px.mean()), rel=1e-10)
    assert terms.neg_elbo == pytest.approx(terms.distortion + terms.rate)


def test_analytic_kl_is_unbiased_for_log_px(linear_gaussian):
    """Analytic KL: only E_q[log p(x|z)] is sampled, so ELBO = log p(x) in expectation."""
    model, exact_guide, _, x, log_px = linear_gaussian
    log_lik, kl = elbo_terms_per_image(model, exact_guide, x, analytic_kl=True)
    error = log_lik - kl - log_px
    assert float(error.std()) > 0.1  # not exact per sample...
    assert abs(float(error.mean())) < 4 * float(error.std()) / len(error) ** 0.5  # ...but unbiased


def test_a_worse_guide_gives_a_lower_bound(linear_gaussian):
    model, exact_guide, poor_guide, x, log_px = linear_gaussian
    torch.manual_seed(1)
    poor = evaluate_elbo(model, poor_guide, x)
    gap = poor.neg_elbo + float(log_px.mean())  # mean KL(q || posterior) > 0
    assert gap > 0.5
    assert poor.rate == pytest.approx(0.0, abs=1e-12)  # q = p(z): no information, zero rate
