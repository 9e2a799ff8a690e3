"""A linear-Gaussian latent variable model, whose evidence and posterior are closed form: the
yardstick for estimators of log p(x) (importance sampling, AIS, BDMC) and for gradients.

    z ~ N(0, I_d),   x | z ~ N(W z + b, s^2 I_D),   W with orthogonal columns,

so the posterior is diagonal: N(S W^T (x - b) / s^2, S) with S = (I + W^T W / s^2)^-1, and
log p(x) = log N(x; b, W W^T + s^2 I). The guide q(z|x) = N(x A + c, diag exp(log_scale)^2)
is an amortised encoder with parameters A, c, log_scale; ``exact()`` sets them to the true
posterior, ``perturbed()`` moves them off it.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..model.vae import kl_weight


class LinearGaussian(nn.Module):
    def __init__(self, D: int = 6, d: int = 2, s: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(D, d, generator=g, dtype=torch.float64))
        self.W = nn.Parameter(q * torch.linspace(2.0, 0.7, d, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(D, generator=g, dtype=torch.float64))
        self.s = s
        self.A = nn.Parameter(torch.zeros(D, d, dtype=torch.float64))
        self.c = nn.Parameter(torch.zeros(d, dtype=torch.float64))
        self.log_scale = nn.Parameter(torch.zeros(d, dtype=torch.float64))
        self.d = d
        self.beta = 1.0  # weight of the latent site, as in pyro_vae's VAE

    def model(self, x: torch.Tensor) -> None:
        pyro.module("lg", self)
        with pyro.plate("data", x.shape[0]):
            with kl_weight(self.beta):
                z = pyro.sample("z", dist.Normal(torch.zeros_like(self.c), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.s).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        pyro.module("lg", self)
        with pyro.plate("data", x.shape[0]):
            with kl_weight(self.beta):
                q = dist.Normal(x @ self.A + self.c, self.log_scale.exp())
                return pyro.sample("z", q.to_event(1))

    @torch.no_grad()
    def exact(self) -> LinearGaussian:
        post_var = 1.0 / (1.0 + (self.W**2).sum(0) / self.s**2)
        self.A.copy_(self.W * post_var / self.s**2)
        self.c.copy_(-(self.b @ self.W) * post_var / self.s**2)
        self.log_scale.copy_(0.5 * post_var.log())
        return self

    @torch.no_grad()
    def perturbed(self, amount: float = 0.3, seed: int = 1) -> LinearGaussian:
        self.exact()
        g = torch.Generator().manual_seed(seed)
        for p in (self.A, self.c, self.log_scale):
            p.add_(amount * torch.randn(p.shape, generator=g, dtype=p.dtype))
        return self

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [self.A, self.c, self.log_scale]

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.W @ self.W.T + self.s**2 * torch.eye(self.W.shape[0], dtype=x.dtype)
        return dist.MultivariateNormal(self.b, cov).log_prob(x)

    def sample(self, n: int, seed: int = 2) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            z = torch.randn(n, self.d, generator=g, dtype=torch.float64)
            noise = torch.randn(n, self.W.shape[0], generator=g, dtype=torch.float64)
            return z @ self.W.T + self.b + self.s * noise
