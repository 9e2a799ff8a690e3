"""Evaluation against the closed-form linear-Gaussian model (see linear_gaussian.py)."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from support import imperfect_linear_gaussian

from pyro_vae import build_model, build_vae
from pyro_vae.checks.linear_gaussian import LinearGaussian
from pyro_vae.inference import (
    active_units,
    elbo_terms_per_image,
    evaluate_elbo,
    importance_log_weights,
    kl_per_dimension,
    log_likelihood,
    posterior_means,
)


def test_exact_posterior_gives_log_px_with_zero_variance():
    """Monte Carlo KL: log p(x, z) - log q(z|x) = log p(x) at every z from the exact posterior."""
    lg = LinearGaussian().exact()
    x = lg.sample(400)
    log_px = lg.log_evidence(x).detach()
    for _ in range(3):
        log_lik, kl = elbo_terms_per_image(lg.model, lg.guide, x, analytic_kl=False)
        torch.testing.assert_close((log_lik - kl).detach(), log_px, rtol=1e-10, atol=1e-10)
    terms = evaluate_elbo(lg.model, lg.guide, x, batch_size=64, analytic_kl=False)
    assert terms.neg_elbo == pytest.approx(-float(log_px.mean()), rel=1e-10)
    assert terms.neg_elbo == pytest.approx(terms.distortion + terms.rate)
    # and so is the importance-sampled estimate, however it is chunked
    for batch_size, particle_batch in [(400, 50), (7, 3)]:
        est = log_likelihood(lg.model, lg.guide, x, 50, batch_size, particle_batch)
        torch.testing.assert_close(est.per_image.double(), log_px, rtol=1e-6, atol=1e-5)
        assert float(est.stderr.max()) < 1e-3


def test_analytic_kl_is_unbiased_for_log_px():
    """Analytic KL: only E_q[log p(x|z)] is sampled, so ELBO = log p(x) in expectation."""
    lg = LinearGaussian().exact()
    x = lg.sample(400)
    log_lik, kl = elbo_terms_per_image(lg.model, lg.guide, x, analytic_kl=True)
    error = (log_lik - kl - lg.log_evidence(x)).detach()
    assert float(error.std()) > 0.1  # not exact per sample...
    assert abs(float(error.mean())) < 4 * float(error.std()) / len(error) ** 0.5  # ...unbiased


def test_bounds_order_elbo_iwae_log_px():
    """ELBO <= IWAE_5 <= IWAE_50 <= log p(x), on average over 300 images."""
    lg, x, log_px = imperfect_linear_gaussian(0.2, 300)
    pyro.set_rng_seed(0)
    log_lik, kl = elbo_terms_per_image(lg.model, lg.guide, x, analytic_kl=False)
    elbo = (log_lik - kl).detach()
    iwae = {k: log_likelihood(lg.model, lg.guide, x, num_samples=k) for k in (1, 5, 50)}
    # K = 1 is the ELBO: the two estimates agree within their standard errors
    se = ((elbo.var() + iwae[1].per_image.var()) / len(elbo)) ** 0.5
    assert abs(float(elbo.mean()) - iwae[1].mean) < 4 * float(se)
    # measured: -16.5 < -13.3 < -11.1 < -8.8 nats, each step many standard errors wide
    assert float(elbo.mean()) + 1 < iwae[5].mean < iwae[50].mean - 1 < float(log_px.mean()) - 2


def test_5000_samples_are_within_their_standard_error():
    """With a guide near the posterior the estimate is within 2 of its (delta-method) standard
    errors of the exact log p(x); a poor guide would make that standard error optimistic."""
    lg, x, log_px = imperfect_linear_gaussian(0.05, 300)
    pyro.set_rng_seed(1)
    est = log_likelihood(lg.model, lg.guide, x, num_samples=5000)
    assert 0 < est.mean_stderr < 0.01
    assert abs(est.mean - float(log_px.mean())) < 2 * est.mean_stderr


def test_active_units_on_a_model_with_dead_dimensions():
    lg = LinearGaussian(D=8, d=3).exact()
    x = lg.sample(500)
    assert active_units(lg.guide, x)[0] == 3
    with torch.no_grad():
        lg.A[:, 1] = 0.0  # the encoder ignores x for dimension 1: its mean never moves
    count, activity = active_units(lg.guide, x)
    assert count == 2
    assert float(activity[1]) == 0.0 and float(activity[0]) > 0.01


def test_kl_per_dimension_splits_the_rate():
    torch.manual_seed(0)
    vae = build_vae((1, 28, 28), z_dim=5, hidden=(32,))
    x = torch.bernoulli(torch.rand(64, 784))
    per_dim = kl_per_dimension(vae.model, vae.guide, x)
    assert per_dim.shape == (5,) and bool((per_dim >= 0).all())
    rate = evaluate_elbo(vae.model, vae.guide, x, analytic_kl=True).rate
    assert float(per_dim.sum()) == pytest.approx(rate, rel=1e-5)
    mixture = build_vae((1, 28, 28), z_dim=5, hidden=(32,), prior="mixture")
    assert kl_per_dimension(mixture.model, mixture.guide, x) is None


def test_standard_error_is_the_sample_deviation_of_the_weights():
    """SE of log p-hat = sd(w) / (sqrt(K) mean(w)) with the sample (K - 1) deviation, checked
    on the explicit weights at K = 4, where the population deviation is 13% smaller."""
    lg, x, _ = imperfect_linear_gaussian(0.5, 300)
    x = x[:20]
    pyro.set_rng_seed(5)
    est = log_likelihood(lg.model, lg.guide, x, num_samples=4, particle_batch=4)
    pyro.set_rng_seed(5)
    w = importance_log_weights(lg.model, lg.guide, x, 4).detach().exp()  # (K, N)
    torch.testing.assert_close(est.per_image, w.mean(0).log(), rtol=1e-10, atol=1e-10)
    want = w.std(0, correction=1) / (4**0.5 * w.mean(0))
    torch.testing.assert_close(est.stderr, want, rtol=1e-8, atol=1e-12)
    assert est.mean_stderr == pytest.approx(float(want.pow(2).sum().sqrt() / 20), rel=1e-8)


def test_several_latent_sites_take_the_monte_carlo_kl():
    """Per-site analytic KLs are wrong when z2's guide depends on z1: with two layers the rate
    is log q(z1, z2 | x) - log p(z1, z2) at the sampled codes, whatever ``analytic_kl`` says."""
    torch.manual_seed(0)
    vae = build_model(
        (1, 4, 4), model="two-layer", z_dim=3, z2_dim=2, hidden=(8,), upper_hidden=(4,)
    ).double()
    x = torch.bernoulli(torch.rand(6, 16, dtype=torch.float64))
    pyro.set_rng_seed(2)
    log_lik, kl = elbo_terms_per_image(vae.model, vae.guide, x, analytic_kl=True)
    pyro.set_rng_seed(2)
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    explicit = sum(
        guide_trace.nodes[s]["fn"].log_prob(guide_trace.nodes[s]["value"])
        - model_trace.nodes[s]["fn"].log_prob(model_trace.nodes[s]["value"])
        for s in ("z1", "z2")
    )
    torch.testing.assert_close(kl, explicit, rtol=1e-10, atol=1e-10)
    x_site = model_trace.nodes["x"]
    torch.testing.assert_close(log_lik, x_site["fn"].log_prob(x_site["value"]))


def test_activity_is_the_variance_of_the_posterior_means():
    """Burda et al.'s A_j = Cov_x(E_q[z_j | x]): a variance, not a standard deviation."""
    lg = LinearGaussian(D=8, d=3).perturbed(0.5)
    x = lg.sample(200)
    count, activity = active_units(lg.guide, x)
    means = (x @ lg.A + lg.c).detach()
    torch.testing.assert_close(posterior_means(lg.guide, x), means)
    torch.testing.assert_close(activity.double(), means.var(0), rtol=1e-6, atol=1e-9)
    assert count == int((means.var(0) > 0.01).sum())
    assert float((means.var(0) - means.std(0)).abs().max()) > 0.1  # the two would differ here


def test_posterior_means_of_two_layers_are_those_of_the_layer_next_to_the_data():
    """With two stochastic layers the codes are E_q[z1 | x], the encoder's loc, not z2's mean
    (which depends on the z1 drawn): figures and active units are about z1."""
    torch.manual_seed(0)
    vae = build_model(
        (1, 4, 4), model="two-layer", z_dim=3, z2_dim=2, hidden=(8,), upper_hidden=(4,)
    )
    x = torch.bernoulli(torch.rand(10, 16))
    loc, _ = vae.encoder(x)
    means = posterior_means(vae.code_guide, x, batch_size=4)
    assert means.shape == (10, 3) and vae.z_dim == 3
    torch.testing.assert_close(means, loc.detach())
    assert active_units(vae.code_guide, x, threshold=0.0)[1].shape == (3,)
