"""Pyro's ELBOs against the hand-written losses, for every likelihood x prior x estimator x beta.

In float64, for the same z: equal losses (relative 1e-9) and equal gradients for every
parameter of the VAE (encoder, decoder, prior, likelihood).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from support import FAMILY_CASES, grads, loss_and_eps, make_data, make_vae
from torch.distributions import kl_divergence

from pyro_vae import LIKELIHOODS, PRIORS, make_estimator
from pyro_vae.checks import (
    MissingReference,
    ReferenceMismatch,
    check_against_reference,
    pyro_and_reference_loss,
    reference_check,
)
from pyro_vae.checks.reference_densities import ANALYTIC_KLS, LOG_LIKELIHOODS, LOG_PRIORS
from pyro_vae.checks.reference_guides import GUIDE_SAMPLES
from pyro_vae.checks.reference_losses import reference_elbo

BETAS = [0.0, 0.5, 1.0, 4.0]


@pytest.mark.parametrize(
    "likelihood,prior,guide,estimator,beta",
    [
        (lik, pri, guide, est, beta)
        for lik, pri, guide in FAMILY_CASES
        for est in ["trace", "mean-field"]
        for beta in BETAS
    ],
)
def test_pyro_loss_and_gradients_equal_reference(
    float64, likelihood, prior, guide, estimator, beta
):
    vae = make_vae(likelihood, prior, beta, guide=guide)
    x = make_data(likelihood)
    pyro_loss, ref_loss = pyro_and_reference_loss(vae, make_estimator(estimator), x)
    assert pyro_loss.dtype == torch.float64
    assert torch.isfinite(ref_loss)
    torch.testing.assert_close(pyro_loss, ref_loss, rtol=1e-9, atol=0)

    params = [p for p in vae.parameters()]
    names = [n for n, _ in vae.named_parameters()]
    for name, gp, gr in zip(names, grads(pyro_loss, params), grads(ref_loss, params), strict=True):
        torch.testing.assert_close(gp, gr, rtol=1e-7, atol=1e-9, msg=f"gradient of {name}")


@pytest.mark.parametrize("estimator", ["trace", "mean-field"])
def test_conv_networks_match_reference(float64, estimator):
    vae = make_vae("bernoulli", "normal", beta=0.5, network="conv")
    x = make_data("bernoulli", n=4)
    pyro_loss, ref_loss = pyro_and_reference_loss(vae, make_estimator(estimator), x)
    torch.testing.assert_close(pyro_loss, ref_loss, rtol=1e-9, atol=0)


def test_every_family_has_a_reference():
    assert set(LIKELIHOODS.names()) == set(LOG_LIKELIHOODS)
    assert set(PRIORS.names()) == set(LOG_PRIORS)
    assert set(ANALYTIC_KLS) <= set(PRIORS.names())


def test_mean_field_falls_back_to_monte_carlo_for_the_mixture_prior(float64):
    vae = make_vae("bernoulli", "mixture")
    x = make_data("bernoulli")
    loc, scale = vae.encoder(x)
    q = dist.Normal(loc, scale).to_event(1)
    with pytest.raises(NotImplementedError):
        kl_divergence(q, vae.prior().expand([x.shape[0]]))
    # same z: TraceMeanField's loss is the Monte Carlo one
    mean_field, eps = loss_and_eps(vae, make_estimator("mean-field"), x)
    mc_reference = -reference_elbo(vae, x, eps, analytic_kl=False).sum()
    torch.testing.assert_close(mean_field, mc_reference, rtol=1e-9, atol=0)


def test_mean_field_uses_the_analytic_kl_for_the_normal_prior(float64):
    vae = make_vae("bernoulli", "normal")
    x = make_data("bernoulli")
    pyro_loss, eps = loss_and_eps(vae, make_estimator("mean-field"), x)
    analytic = -reference_elbo(vae, x, eps, analytic_kl=True).sum()
    monte_carlo = -reference_elbo(vae, x, eps, analytic_kl=False).sum()
    torch.testing.assert_close(pyro_loss, analytic, rtol=1e-9, atol=0)
    # a different estimator, not a relabel
    assert abs(float((analytic - monte_carlo).detach())) > 1e-3


def test_beta_reaches_the_latent_site_in_model_and_guide():
    vae = make_vae("bernoulli", "normal", beta=0.25)
    x = make_data("bernoulli")
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    assert guide_trace.nodes["z"]["scale"] == 0.25
    assert model_trace.nodes["z"]["scale"] == 0.25
    assert model_trace.nodes["x"]["scale"] == 1.0


def test_scaling_the_guide_alone_is_a_different_objective(float64):
    """Why the model scales z too: Trace_ELBO scales each side's log-density separately."""
    vae = make_vae("bernoulli", "normal", beta=4.0)
    x = make_data("bernoulli")

    def guide_only_scaled_model(x):
        vae.beta = 1.0  # the model's z is left unscaled
        try:
            return vae.model(x)
        finally:
            vae.beta = 4.0

    kept = {}

    def guide(x):
        kept["z"] = vae.guide(x)
        return kept["z"]

    wrong = Trace_ELBO().differentiable_loss(guide_only_scaled_model, guide, x)
    loc, scale = vae.encoder(x)
    right = -reference_elbo(vae, x, ((kept["z"] - loc) / scale).detach(), beta=4.0).sum()
    assert abs(float((wrong - right).detach())) > 1.0


def test_beta_zero_masks_the_kl_and_scale_zero_would_raise(float64):
    with pytest.raises(ValueError):
        poutine.scale(scale=0.0)
    vae = make_vae("bernoulli", "normal", beta=0.0)
    x = make_data("bernoulli")
    kept = {}

    def guide(x):
        kept["z"] = vae.guide(x)
        return kept["z"]

    for estimator in ["trace", "mean-field"]:
        loss = make_estimator(estimator).differentiable_loss(vae.model, guide, x)
        recon = -vae.likelihood(vae.decoder(kept["z"])).log_prob(x).sum()
        torch.testing.assert_close(loss, recon, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="beta"):
        vae.beta = -0.1


def test_check_against_reference_reports_a_mismatch(float64, monkeypatch):
    vae = make_vae("bernoulli", "normal")
    x = make_data("bernoulli")
    p, r = check_against_reference(vae, make_estimator("trace"), x)
    assert p == pytest.approx(r, rel=1e-9)
    # an estimator whose loss is off by 1% must be caught
    elbo = make_estimator("trace")
    original = elbo.differentiable_loss
    monkeypatch.setattr(elbo, "differentiable_loss", lambda *a: 1.01 * original(*a))
    with pytest.raises(ReferenceMismatch, match="differs from the hand-written loss"):
        check_against_reference(vae, elbo, x)


@pytest.mark.parametrize(
    "losses",
    [
        (float("nan"), float("nan")),
        (float("inf"), float("inf")),
        (-float("inf"), -float("inf")),
        (float("nan"), 3.0),
        (3.0, float("inf")),
    ],
    ids=["nan", "inf", "-inf", "pyro-nan", "reference-inf"],
)
def test_check_against_reference_fails_when_a_loss_is_not_finite(monkeypatch, losses):
    """Two NaN (or two equal infinite) losses agree on nothing, and neither does one such loss
    beside a number: the first-batch check fails."""
    vae = make_vae("bernoulli", "normal")
    x = make_data("bernoulli")
    pair = tuple(torch.tensor(v) for v in losses)
    monkeypatch.setattr(reference_check, "pyro_and_reference_loss", lambda *a: pair)
    with pytest.raises(ReferenceMismatch, match="differs from the hand-written loss"):
        check_against_reference(vae, make_estimator("trace"), x)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_check_against_reference_fails_on_weights_that_make_both_losses_nan():
    """The same, with NaN in the decoder's weights: Pyro's loss and the reference are both NaN."""
    vae = make_vae("bernoulli", "normal")
    x = make_data("bernoulli")
    with torch.no_grad():
        list(vae.decoder.parameters())[-1][0] = float("nan")  # one pixel's logit
    with pyro.validation_enabled(False):
        p, r = pyro_and_reference_loss(vae, make_estimator("trace"), x)
        assert torch.isnan(p) and torch.isnan(r)
        with pytest.raises(ReferenceMismatch):
            check_against_reference(vae, make_estimator("trace"), x)


def _off_by(elbo, relative: float, monkeypatch):
    """``elbo`` with its loss multiplied by 1 + relative."""
    original = elbo.differentiable_loss
    monkeypatch.setattr(elbo, "differentiable_loss", lambda *a: (1 + relative) * original(*a))
    return elbo


def test_the_float64_check_holds_to_1e_9(float64, monkeypatch):
    """In float64 a loss off by a relative 1e-6 is a mismatch (the tolerance is 1e-9); one off
    by 1e-12 is summation order. In float32 the same 1e-6 passes (its tolerance is 1e-4)."""
    vae = make_vae("bernoulli", "normal")
    x = make_data("bernoulli")
    for relative in (1e-6, 1e-8):
        with pytest.raises(ReferenceMismatch, match=r"> 1e-09"):
            check_against_reference(vae, _off_by(make_estimator("trace"), relative, monkeypatch), x)
    p, r = check_against_reference(vae, _off_by(make_estimator("trace"), 1e-12, monkeypatch), x)
    assert p != r and p == pytest.approx(r, rel=1e-11)
    vae32, x32 = vae.float(), x.float()
    p, r = check_against_reference(vae32, _off_by(make_estimator("trace"), 1e-6, monkeypatch), x32)
    assert abs(p - r) > 1e-7 * abs(r)


@pytest.mark.parametrize(
    "kind, table, name",
    [
        ("likelihood", LOG_LIKELIHOODS, "bernoulli"),
        ("prior", LOG_PRIORS, "normal"),
        ("guide", GUIDE_SAMPLES, "diagonal"),
    ],
    ids=["likelihood", "prior", "guide"],
)
def test_a_family_with_no_reference_is_refused_by_name(monkeypatch, kind, table, name):
    """A likelihood, prior or guide with no hand-written counterpart is refused, naming it and
    the table to add it to, before anything is compared."""
    vae = make_vae("bernoulli", "normal")
    x = make_data("bernoulli")
    monkeypatch.delitem(table, name)
    with pytest.raises(MissingReference, match=f"the {kind} '{name}': add one to"):
        check_against_reference(vae, make_estimator("trace"), x)


@pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")
def test_an_estimator_with_no_reference_is_refused():
    """Pyro's TraceEnum_ELBO has a loss but no hand-written counterpart: refused, not passed."""
    vae = make_vae("bernoulli", "normal")
    x = make_data("bernoulli")
    with pytest.raises(MissingReference, match="no hand-written reference for TraceEnum_ELBO"):
        check_against_reference(vae, TraceEnum_ELBO(), x)
