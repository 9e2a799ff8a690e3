"""The variational families: what their densities are, that they are densities, that the noise
is recovered, and that the low-rank family reaches a correlated posterior the diagonal one
cannot."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from pyro_vae import GUIDES, build_vae
from pyro_vae.checks.reference_guides import reference_sample


def _vae(guide: str, z_dim: int = 3, **options):
    torch.manual_seed(0)
    vae = build_vae((1, 4, 4), guide=guide, z_dim=z_dim, hidden=(8,), **options)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return vae


@pytest.mark.parametrize("guide", GUIDES.names())
def test_noise_is_recovered_and_replays_the_sample(float64, guide):
    vae = _vae(guide)
    x = torch.rand(5, 16)
    q = vae.q(vae.encoder, x)
    z = q.rsample((4,))  # particles in front, as IWAE draws them
    eps = vae.q.noise(vae.encoder, x, z)
    assert eps.shape == z.shape
    ref = reference_sample(vae, x, eps)
    torch.testing.assert_close(ref.z, z, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(ref.log_q, q.log_prob(z), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(ref.log_q_stopped(), q.log_prob(z.detach()), rtol=1e-8, atol=1e-9)


def test_low_rank_covariance_is_the_low_rank_part_plus_the_diagonal(float64):
    vae = _vae("low-rank", rank=2)
    x = torch.rand(3, 16)
    loc, scale, w = vae.q.parameters_of(vae.encoder, x)
    q = vae.q(vae.encoder, x)
    assert w.shape == (3, 3, 2)
    torch.testing.assert_close(
        q.covariance_matrix, w @ w.transpose(-1, -2) + torch.diag_embed(scale**2)
    )
    torch.testing.assert_close(q.mean, loc)
    # and it starts near the diagonal family (the factor head starts small)
    fresh = build_vae((1, 4, 4), guide="low-rank", z_dim=3, hidden=(8,))
    _, s0, w0 = fresh.q.parameters_of(fresh.encoder, x)
    assert float(w0.detach().abs().max()) < 0.2 * float(s0.detach().min())


def test_iaf_density_integrates_to_one(float64):
    """log q of the flow, on a dense 2-D grid: the change of variables is right."""
    vae = _vae("iaf", z_dim=2, flows=3)
    q = vae.q(vae.encoder, torch.rand(1, 16))
    grid = torch.linspace(-12, 12, 801)
    zz = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 1, 2)
    with torch.no_grad():
        density = q.log_prob(zz).exp().reshape(801, 801)
    mass = torch.trapezoid(torch.trapezoid(density, grid), grid)
    assert float(mass) == pytest.approx(1.0, abs=1e-4)


def test_bad_options():
    with pytest.raises(ValueError, match="z_dim >= 2"):
        build_vae((1, 4, 4), guide="iaf", z_dim=1, hidden=(8,))
    with pytest.raises(ValueError, match="flows"):
        build_vae((1, 4, 4), guide="iaf", z_dim=2, hidden=(8,), flows=0)
    with pytest.raises(ValueError, match="rank"):
        build_vae((1, 4, 4), guide="low-rank", z_dim=2, hidden=(8,), rank=0)
    with pytest.raises(ValueError, match="autoencoder"):
        build_vae((1, 4, 4), guide="iaf", z_dim=2, hidden=(8,), autoencoder=True)


def _correlated_posterior(z_dim: int = 3, data_dim: int = 5, sigma: float = 0.3):
    """x | z ~ N(W z, sigma^2 I), z ~ N(0, I): the posterior is N(m, S), S = (I + W^T W /
    sigma^2)^-1, correlated for a W without orthogonal columns."""
    g = torch.Generator().manual_seed(5)
    w = torch.randn(data_dim, z_dim, generator=g, dtype=torch.float64)
    x = torch.randn(1, data_dim, generator=g, dtype=torch.float64)
    precision = torch.eye(z_dim, dtype=torch.float64) + w.T @ w / sigma**2
    cov = torch.linalg.inv(precision)
    mean = (cov @ w.T @ x.T / sigma**2).T
    return x, dist.MultivariateNormal(mean, covariance_matrix=cov), precision


def _fit_guide(guide: str, x, posterior, steps: int = 1500) -> float:
    """min over the guide's parameters of KL(q(z|x) || p(z|x)), in closed form."""
    rank = {"rank": 1} if guide == "low-rank" else {}
    vae = build_vae((5,), guide=guide, z_dim=3, hidden=(16,), likelihood="gaussian", **rank)
    vae.double()
    opt = torch.optim.Adam(vae.guide_parameters(), lr=0.02)
    for _ in range(steps):
        q = vae.q(vae.encoder, x)
        if guide == "diagonal":
            base = q.base_dist
            q = dist.MultivariateNormal(base.loc, scale_tril=torch.diag_embed(base.scale))
        kl = kl_divergence(q, posterior).sum()
        opt.zero_grad()
        kl.backward()
        opt.step()
    return float(kl.detach())


def test_low_rank_reaches_a_correlated_posterior_the_diagonal_cannot(float64):
    """The best diagonal Gaussian misses a correlated posterior by exactly
    KL* = 1/2 (sum_j log Lambda_jj - log det Lambda) (Lambda: the posterior precision);
    rank one on top of the diagonal already fits it."""
    x, posterior, precision = _correlated_posterior()
    best_diagonal = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))
    assert float(best_diagonal) > 0.05  # the posterior really is correlated
    diagonal = _fit_guide("diagonal", x, posterior)
    low_rank = _fit_guide("low-rank", x, posterior)
    assert diagonal == pytest.approx(float(best_diagonal), rel=1e-3)
    assert low_rank < 1e-4
    assert math.isfinite(low_rank)
