"""The AIS loop people write by hand: the yardstick for AIS's speed.

Annealed importance sampling (Neal, 2001) from q(z|x) to p(z|x) along
f_t = q(z|x)^(1 - b_t) p(x, z)^b_t with HMC transitions, as Wu, Burda, Salakhutdinov & Grosse
(2017, "On the quantitative analysis of decoder-based generative models") run it on a VAE with
Bernoulli pixels, a standard normal prior and a diagonal Gaussian q(z|x): plain PyTorch, no
Pyro, nothing compiled. Every chain of every image moves at once (z is (C, N, D)); each
leapfrog step evaluates log f_t and its gradient with ``torch.autograd.grad``; the step size is
one per image, multiplied by 1.02 after a transition whose acceptance rate is above 0.65 and by
0.98 otherwise, clamped to [1e-4, 0.5]. The schedule is the sigmoidal one of Grosse et al.
(2015). The algorithm is this project's :mod:`pyro_vae.inference.annealing`, so the two
estimates agree to Monte Carlo error.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def sigmoid_betas(num_steps: int, delta: float = 4.0) -> list[float]:
    """b_0..b_T: sigmoid(delta (2t/T - 1)) rescaled to [0, 1]."""
    s = torch.sigmoid(torch.linspace(-delta, delta, num_steps + 1, dtype=torch.float64))
    return ((s - s[0]) / (s[-1] - s[0])).tolist()


def _normal_log_density(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


@torch.no_grad()
def handwritten_ais(
    encoder: nn.Module,
    decoder: nn.Module,
    x: torch.Tensor,
    num_steps: int = 200,
    chains: int = 8,
    leapfrog_steps: int = 2,
    step_size: float = 0.05,
) -> torch.Tensor:
    """AIS log p(x) per image (float64): log mean over ``chains`` chains of exp(log w)."""
    loc, scale = encoder(x)
    loc, scale = loc.expand(chains, *loc.shape), scale.expand(chains, *scale.shape)

    def log_parts(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = decoder(z)
        log_px_z = -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none"
        ).sum(-1)
        log_pz = (-0.5 * z.pow(2) - 0.5 * LOG_2PI).sum(-1)
        return log_px_z + log_pz, _normal_log_density(z, loc, scale)

    def evaluated(z: torch.Tensor, beta: float) -> tuple[torch.Tensor, ...]:
        """log p(x, z) - log q(z|x), log f_b(z) and its gradient at z."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_p, log_q = log_parts(z)
            log_f = (1 - beta) * log_q + beta * log_p
            (grad,) = torch.autograd.grad(log_f.sum(), z)
        return (log_p - log_q).detach(), log_f.detach(), grad

    betas = sigmoid_betas(num_steps)
    z = loc + scale * torch.randn_like(loc)
    eps = torch.full((1, x.shape[0], 1), step_size, dtype=x.dtype, device=x.device)
    log_w = torch.zeros(chains, x.shape[0], dtype=torch.float64, device=x.device)
    for t in range(1, num_steps + 1):
        # the weight's h(z_{t-1}) and the transition's start come from one evaluation
        h, log_f, grad = evaluated(z, betas[t])
        log_w += (betas[t] - betas[t - 1]) * h.double()
        if t == num_steps:
            break
        beta = betas[t]
        p0 = torch.randn_like(z)
        p = p0 + 0.5 * eps * grad
        z_new = z
        for i in range(leapfrog_steps):
            z_new = z_new + eps * p
            _, log_f_new, grad_new = evaluated(z_new, beta)
            p = p + (0.5 if i == leapfrog_steps - 1 else 1.0) * eps * grad_new
        log_ratio = (log_f_new - 0.5 * p.pow(2).sum(-1)) - (log_f - 0.5 * p0.pow(2).sum(-1))
        log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf, posinf=-math.inf)
        accept = torch.rand_like(log_ratio).log() < log_ratio
        z = torch.where(accept.unsqueeze(-1), z_new, z)
        rate = accept.double().mean(0).reshape(1, -1, 1)
        eps = torch.where(rate > 0.65, eps * 1.02, eps * 0.98).clamp(1e-4, 0.5)
    return torch.logsumexp(log_w, 0) - math.log(chains)
