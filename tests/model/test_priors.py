from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from pyro_vae import PRIORS, build_vae
from pyro_vae.checks.reference_densities import ANALYTIC_KLS, LOG_PRIORS
from pyro_vae.model.nets import MLPEncoder


def _perturbed(name: str, z_dim: int = 3):
    torch.manual_seed(0)
    small = {"components": 5, "pseudo_inputs": 4}  # where the prior has them
    options = {k: v for k, v in small.items() if k in PRIORS.options(name)}
    prior = PRIORS.create(name, z_dim, offer={"data_dim": 6}, **options)
    encoder = MLPEncoder(6, z_dim, (8,))  # used by priors built from the encoder (vamp)
    prior.attach(encoder)
    prior.owned_encoder = encoder  # keep it alive and perturbed with the prior
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
        if name == "vamp":
            prior.pseudo_inputs.uniform_(-0.2, 1.2)
    return prior


@pytest.mark.parametrize("name", PRIORS.names())
def test_shapes_and_log_density_match_the_formula(float64, name):
    prior = _perturbed(name)
    p = prior()
    assert p.batch_shape == () and p.event_shape == (3,)
    z = p.sample((50,))
    assert z.shape == (50, 3)
    torch.testing.assert_close(p.log_prob(z), LOG_PRIORS[name](prior, z), rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", sorted(ANALYTIC_KLS))
def test_analytic_kl_is_the_expectation_of_the_log_ratio(float64, name):
    """Closed form vs a 400k-sample Monte Carlo average of log q(z) - log p(z)."""
    prior = _perturbed(name)
    loc, scale = torch.tensor([[0.5, -1.0, 0.2]]), torch.tensor([[0.7, 1.3, 0.4]])
    q = dist.Normal(loc, scale).to_event(1)
    exact = ANALYTIC_KLS[name](prior, loc, scale).detach()
    torch.testing.assert_close(exact, kl_divergence(q, prior().expand([1])), rtol=1e-10, atol=0)
    torch.manual_seed(1)
    z = q.sample((400_000,))
    log_ratio = (q.log_prob(z) - LOG_PRIORS[name](prior, z)).detach()
    stderr = float(log_ratio.std() / 400_000**0.5)
    assert abs(float(log_ratio.mean() - exact)) < 4 * stderr


def test_mixture_weights_normalise(float64):
    prior = _perturbed("mixture", z_dim=1)
    z = torch.linspace(-15, 15, 30001).unsqueeze(-1)
    density = prior().log_prob(z).exp().detach()
    assert float(torch.trapezoid(density, z.squeeze(-1))) == pytest.approx(1.0, abs=1e-6)


def test_mixture_components_start_apart():
    """Identical initial components would get identical gradients and never separate."""
    prior = PRIORS.create("mixture", 3, components=10)
    gaps = torch.cdist(prior.locs.detach(), prior.locs.detach())
    gaps.fill_diagonal_(float("inf"))
    assert float(gaps.min()) > 0.1  # spread like N(0, I) draws, not a shared starting point


def test_invalid_sizes():
    with pytest.raises(ValueError, match="z_dim"):
        PRIORS.create("normal", 0)
    with pytest.raises(ValueError, match="components"):
        PRIORS.create("mixture", 2, components=0)


def test_mixture_weights_normalise_for_vamp(float64):
    prior = _perturbed("vamp", z_dim=1)
    z = torch.linspace(-40, 40, 80001).unsqueeze(-1)
    density = prior().log_prob(z).exp().detach()
    assert float(torch.trapezoid(density, z.squeeze(-1))) == pytest.approx(1.0, abs=1e-6)


def test_vamp_is_the_average_posterior_at_the_pseudo_inputs(float64):
    """p(z) = mean_k q(z | u_k), with q the VAE's own encoder at the clipped pseudo-inputs."""
    vae = build_vae((1, 4, 4), prior="vamp", z_dim=2, hidden=(8,), pseudo_inputs=3)
    with torch.no_grad():
        vae.prior.pseudo_inputs.copy_(torch.linspace(-0.5, 1.5, 48).reshape(3, 16))
    z = torch.randn(7, 2)
    u = vae.prior.pseudo_inputs.clamp(0, 1)
    want = (
        torch.stack(
            [dist.Normal(*vae.encoder(u[k : k + 1])).to_event(1).log_prob(z) for k in range(3)]
        )
        .exp()
        .mean(0)
        .log()
    )
    torch.testing.assert_close(vae.prior().log_prob(z), want, rtol=1e-10, atol=0)
    # the encoder is the VAE's, not a copy: its parameters get gradient through log p(z), and
    # the prior's own state is its pseudo-inputs alone
    assert vae.prior.encoder is vae.encoder
    vae.prior().log_prob(z).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.encoder.parameters())
    assert [k for k in vae.state_dict() if k.startswith("prior.")] == ["prior.pseudo_inputs"]


def test_vamp_needs_an_encoder():
    with pytest.raises(RuntimeError, match="attach"):
        PRIORS.create("vamp", 2, data_dim=4)()
    with pytest.raises(ValueError, match="pseudo_inputs"):
        PRIORS.create("vamp", 2, data_dim=4, pseudo_inputs=0)


def test_mixture_log_prob_by_matrix_products_equals_torch(float64):
    """DiagonalGaussianMixture's log_prob (three matrix products, no (..., K, D) tensor) is
    MixtureSameFamily's, for shared and for batched components, expanded or not."""
    from pyro_vae.model.priors import DiagonalGaussianMixture

    g = torch.Generator().manual_seed(0)
    for batch in [(), (3,)]:
        loc = torch.randn(*batch, 7, 4, generator=g)
        scale = torch.rand(*batch, 7, 4, generator=g) + 0.2
        logits = torch.randn(*batch, 7, generator=g)
        parts = (dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1))
        ours, torchs = DiagonalGaussianMixture(*parts), dist.MixtureSameFamily(*parts)
        z = 3 * torch.randn(5, *batch, 4, generator=g)
        torch.testing.assert_close(ours.log_prob(z), torchs.log_prob(z), rtol=1e-12, atol=1e-12)
        wide = (6, *batch)
        torch.testing.assert_close(
            ours.expand(wide).log_prob(z.unsqueeze(1).expand(5, *wide, 4)),
            torchs.expand(wide).log_prob(z.unsqueeze(1).expand(5, *wide, 4)),
            rtol=1e-12,
            atol=1e-12,
        )
