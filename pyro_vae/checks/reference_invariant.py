"""The invariant VAE's loss by hand (spatial-VAE, Bepler et al., 2019), in plain torch: the
yardstick its Pyro program is checked against.

With the encoder's (loc, scale) split into the sites z, theta, dx (those in use, in that
order) and the noise eps of each, s = loc_s + scale_s * eps_s, and with prior scales
sigma_z = 1, sigma_theta = theta_prior, sigma_dx = dx_prior:

    c'_i     = R(theta) c_i + dx                        (an explicit 2 x 2 matrix product)
    h_i      = [W_c | W_z] [c'_i ; z] + b               (the first layer on the joined input)
    ELBO_b   = log p(x | f(c', z)) - beta * KL,
    KL_mc    = sum_s [log N(s; loc_s, scale_s^2) - log N(s; 0, sigma_s^2)]     (Trace_ELBO)
    KL_an    = sum_s sum_j [log(sigma_s / scale_sj) + (scale_sj^2 + loc_sj^2) / (2 sigma_s^2)
               - 1/2]                                                  (TraceMeanField_ELBO)

The first layer is written on the joined input [c'_i, z], where the model adds W_z z once
per image; the rotation as a matrix product, where the model writes out its components.

With the search over R turns (``rotations``; :mod:`pyro_vae.model.rotation_search`) the encoder
gives logits l_r and one (loc, scale) per turn r, each site's value per turn is
s_r = loc_sr + scale_sr * eps_sr, the angle is 2 pi r / R + theta_r, and the sum over the turns
is written out (``TraceEnum_ELBO``, Monte Carlo KL of the continuous sites):

    q_r      = softmax(l)_r
    ELBO_b   = sum_r q_r [ log p(x | f(c'(r), z_r)) - beta KL_mc,r + beta (log(1/R) - log q_r) ]
"""

from __future__ import annotations

import math

import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from torch import nn

from ..densities import normal_log_density
from ..inference.sync_free import MeanFieldELBO, MonteCarloELBO
from .reference_densities import LOG_LIKELIHOODS
from .reference_losses import MissingReference

SITES = ("z", "theta", "dx")


def _sizes(vae: nn.Module) -> dict[str, int]:
    """The latent sites in use and their sizes, in the encoder's output order."""
    pose = {"rotation": ("theta", 1), "translation": ("dx", 2)}
    return {"z": vae.z_dim, **dict(pose[i] for i in vae.invariances)}


def _prior_scale(vae: nn.Module, site: str) -> float:
    return {"z": 1.0, "theta": vae.theta_prior, "dx": vae.dx_prior}[site]


def reference_render(
    decoder: nn.Module, z: torch.Tensor, theta: torch.Tensor, dx: torch.Tensor
) -> torch.Tensor:
    """The decoder's output f(R(theta) c_i + dx, z) for every pixel, (..., P), from its
    weights; z (..., z_dim), theta (..., 1) and dx (..., 2) share their leading shape."""
    cos, sin = torch.cos(theta[..., 0]), torch.sin(theta[..., 0])
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    coords = decoder.grid @ rotation.transpose(-1, -2) + dx[..., None, :]  # (..., P, 2)
    joined = torch.cat([coords, z[..., None, :].expand(*coords.shape[:-1], -1)], -1)
    weight = torch.cat([decoder.coord.weight, decoder.latent.weight], 1)
    h = torch.tanh(joined @ weight.T + decoder.coord.bias)
    linears = [m for m in decoder.body if isinstance(m, nn.Linear)]
    for layer in linears[:-1]:
        h = torch.tanh(h @ layer.weight.T + layer.bias)
    return (h @ linears[-1].weight.T + linears[-1].bias)[..., 0]


def _normal_kl(loc: torch.Tensor, scale: torch.Tensor, prior_scale: float) -> torch.Tensor:
    """KL(N(loc, scale^2) || N(0, prior_scale^2)), summed over the last dimension."""
    ratio = scale / prior_scale
    return (-torch.log(ratio) + (ratio**2 + (loc / prior_scale) ** 2) / 2 - 0.5).sum(-1)


def _encoder_parts(vae: nn.Module, x: torch.Tensor) -> tuple:
    """(logits of the turns or None, {site: loc}, {site: scale}) from the encoder's output."""
    sizes = _sizes(vae)
    out = vae.encoder(x)
    logits, (loc, scale) = (out[0], out[1:]) if vae.rotations else (None, out)
    locs = dict(zip(sizes, loc.split(list(sizes.values()), -1), strict=True))
    scales = dict(zip(sizes, scale.split(list(sizes.values()), -1), strict=True))
    return logits, locs, scales


def _sampled_kl(values: dict, locs: dict, scales: dict, vae: nn.Module) -> torch.Tensor:
    """sum_s log N(s; loc_s, scale_s^2) - log N(s; 0, sigma_s^2) at the sampled values."""
    kl = 0.0
    for s, value in values.items():
        log_q = normal_log_density(value, locs[s], scales[s]).sum(-1)
        zero, sd = torch.zeros_like(value), torch.full_like(value, _prior_scale(vae, s))
        kl = kl + log_q - normal_log_density(value, zero, sd).sum(-1)
    return kl


def search_reference_elbo(
    vae: nn.Module, x: torch.Tensor, eps: dict[str, torch.Tensor], beta: float = 1.0
) -> torch.Tensor:
    """Per-image ELBO_beta(x), shape (N,), of the invariant VAE with the search over turns:
    the explicit sum over the R turns (see the module doc); ``eps`` per site, (R, N, size)."""
    logits, locs, scales = _encoder_parts(vae, x)
    turns = logits.shape[-1]
    values = {s: locs[s] + scales[s] * eps[s] for s in locs}
    angles = torch.arange(turns, dtype=x.dtype, device=x.device) * (2 * math.pi / turns)
    theta = angles[:, None, None] + values["theta"]
    dx = values.get("dx", x.new_zeros(*values["z"].shape[:-1], 2))
    out = reference_render(vae.decoder, values["z"], theta, dx)
    log_lik = LOG_LIKELIHOODS[type(vae.likelihood).registry_name](vae.likelihood, out, x)
    log_q_turn = torch.log_softmax(logits, -1).transpose(0, 1)  # (R, N)
    per_turn = (
        log_lik
        - beta * _sampled_kl(values, locs, scales, vae)
        + beta * (-math.log(turns) - log_q_turn)
    )
    return (log_q_turn.exp() * per_turn).sum(0)


def invariant_reference_elbo(
    vae: nn.Module,
    x: torch.Tensor,
    eps: dict[str, torch.Tensor],
    beta: float = 1.0,
    analytic_kl: bool = False,
) -> torch.Tensor:
    """Per-image ELBO_beta(x) at the latents that the noise ``eps`` (one tensor per site in
    use, (N, size) or (K, N, size) for K particles) gives, from the invariant VAE's networks;
    shape (N,) or (K, N). See the module doc."""
    sizes = _sizes(vae)
    _, locs, scales = _encoder_parts(vae, x)
    values = {s: locs[s] + scales[s] * eps[s] for s in sizes}
    lead = values["z"].shape[:-1]
    theta = values.get("theta", x.new_zeros(*lead, 1))
    dx = values.get("dx", x.new_zeros(*lead, 2))
    out = reference_render(vae.decoder, values["z"], theta, dx)
    log_lik = LOG_LIKELIHOODS[type(vae.likelihood).registry_name](vae.likelihood, out, x)
    if beta == 0:
        return log_lik
    if analytic_kl:
        kl = sum(_normal_kl(locs[s], scales[s], _prior_scale(vae, s)) for s in sizes)
    else:
        kl = _sampled_kl(values, locs, scales, vae)
    return log_lik - beta * kl


def invariant_noise(
    vae: nn.Module, x: torch.Tensor, sample: tuple[torch.Tensor | None, ...]
) -> dict[str, torch.Tensor]:
    """The noise eps_s = (s - loc_s) / scale_s that the guide's sample (z, theta, dx) came
    from, for the sites in use."""
    with torch.no_grad():
        _, locs, scales = _encoder_parts(vae, x)
        values = dict(zip(SITES, sample, strict=True))
        return {s: (values[s].detach() - locs[s]) / scales[s] for s in locs}


def _particles(elbo: object, vae: nn.Module) -> int:
    """K, for an estimator the reference can replay; :class:`MissingReference` otherwise."""
    if vae.rotations:
        if not isinstance(elbo, TraceEnum_ELBO) or elbo.num_particles != 1:
            raise MissingReference(
                "the search over rotations is checked with TraceEnum_ELBO, one particle"
            )
        return 1
    if not isinstance(elbo, (Trace_ELBO, TraceMeanField_ELBO, MonteCarloELBO, MeanFieldELBO)):
        raise MissingReference(f"no invariant-VAE reference for {type(elbo).__name__}")
    particles = getattr(elbo, "num_particles", 1)
    if particles != 1 and not isinstance(elbo, (MonteCarloELBO, MeanFieldELBO)):
        raise MissingReference("the reference of Pyro's ELBOs takes num_particles=1")
    return particles


def invariant_reference_loss(
    vae: nn.Module, elbo: object, x: torch.Tensor, sample: tuple[torch.Tensor | None, ...]
) -> torch.Tensor:
    """The hand-written loss -(1/K) sum_k sum_n ELBO_beta(x_n) that ``elbo`` estimates at the
    guide's sample: Monte Carlo KL for ``Trace_ELBO`` and its sync-free twin (K particles
    vectorised), analytic KL for ``TraceMeanField_ELBO`` and its twin."""
    particles = _particles(elbo, vae)
    eps = invariant_noise(vae, x, sample)
    if vae.rotations:
        return -search_reference_elbo(vae, x, eps, beta=vae.beta).sum()
    analytic = isinstance(elbo, (TraceMeanField_ELBO, MeanFieldELBO))
    elbo_n = invariant_reference_elbo(vae, x, eps, beta=vae.beta, analytic_kl=analytic)
    return -elbo_n.sum() / particles


class _KeptSample:
    """``guide`` is the VAE's guide, keeping the sample (z, theta, dx) it returns."""

    def __init__(self, vae: nn.Module) -> None:
        self.vae = vae
        self.sample: tuple[torch.Tensor | None, ...] = ()

    def guide(self, x: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        self.sample = self.vae.guide(x)
        return self.sample


def pyro_and_invariant_reference_loss(
    vae: nn.Module, elbo: object, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pyro's differentiable loss and the hand-written one, at the same (z, theta, dx): the
    guide is wrapped to keep the sample it returns."""
    _particles(elbo, vae)  # refused before the guide runs
    keeper = _KeptSample(vae)
    pyro_loss = elbo.differentiable_loss(vae.model, keeper.guide, x)
    return pyro_loss, invariant_reference_loss(vae, elbo, x, keeper.sample)


__all__ = [
    "invariant_noise",
    "invariant_reference_elbo",
    "invariant_reference_loss",
    "pyro_and_invariant_reference_loss",
    "reference_render",
    "search_reference_elbo",
]
