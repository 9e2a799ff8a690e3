from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from pyro_vae import PRIORS
from pyro_vae.reference import ANALYTIC_KLS, LOG_PRIORS


def _perturbed(name: str, z_dim: int = 3):
    torch.manual_seed(0)
    prior = PRIORS.create(name, z_dim, components=5)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
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


def test_invalid_sizes():
    with pytest.raises(ValueError, match="z_dim"):
        PRIORS.create("normal", 0)
    with pytest.raises(ValueError, match="components"):
        PRIORS.create("mixture", 2, components=0)
