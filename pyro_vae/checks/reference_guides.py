"""Hand-written samples of every registered guide: z drawn from q(z|x) with given noise eps,
its log q(z|x), and log q at the same z with the guide's parameters held constant (the STL and
DReG estimators differentiate log q through z only). Written from the formulas; the networks
(and the flow's MADE layers) are called, the densities are not.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..densities import HALF_LOG_2PI, normal_log_density


class ReferenceSample:
    """z drawn from q(z|x) with the noise eps, log q(z|x), and ``log_q_stopped()``: log q at
    the same z with the variational parameters held constant (differentiated through z only,
    for the STL and DReG estimators). ``loc``/``scale`` are the diagonal Gaussian's."""

    def __init__(self, z, log_q, stopped: Callable[[], torch.Tensor], loc=None, scale=None):
        self.z, self.log_q, self._stopped = z, log_q, stopped
        self.loc, self.scale = loc, scale

    def log_q_stopped(self) -> torch.Tensor:
        return self._stopped()


def _diagonal_sample(vae: nn.Module, x: torch.Tensor, eps: torch.Tensor) -> ReferenceSample:
    loc, scale = vae.encoder(x)
    z = loc + scale * eps
    return ReferenceSample(
        z,
        normal_log_density(z, loc, scale).sum(-1),
        lambda: normal_log_density(z, loc.detach(), scale.detach()).sum(-1),
        loc,
        scale,
    )


def _gaussian_log_density_tril(z, loc, tril) -> torch.Tensor:
    """log N(z; loc, L L^T) = -|L^-1 (z - loc)|^2 / 2 - sum_j log L_jj - d/2 log 2 pi."""
    diff = (z - loc).unsqueeze(-1)
    u = torch.linalg.solve_triangular(
        tril.expand(*diff.shape[:-2], *tril.shape[-2:]), diff, upper=False
    ).squeeze(-1)
    log_diag = torch.log(torch.diagonal(tril, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (u**2).sum(-1) - log_diag - z.shape[-1] * HALF_LOG_2PI


def _low_rank_sample(vae: nn.Module, x: torch.Tensor, eps: torch.Tensor) -> ReferenceSample:
    """Sigma = W W^T + diag scale^2 from the encoder's features, L = chol(Sigma),
    z = loc + L eps, log q = -|eps|^2 / 2 - sum_j log L_jj - d/2 log 2 pi."""
    h = vae.encoder.features(x)
    loc, scale = vae.encoder.head(h)
    fam = vae.q
    w = fam.factor(h).reshape(*h.shape[:-1], fam.z_dim, fam.rank)
    tril = torch.linalg.cholesky(w @ w.transpose(-1, -2) + torch.diag_embed(scale**2))
    z = loc + (tril @ eps.unsqueeze(-1)).squeeze(-1)
    log_diag = torch.log(torch.diagonal(tril, dim1=-2, dim2=-1)).sum(-1)
    log_q = -0.5 * (eps**2).sum(-1) - log_diag - z.shape[-1] * HALF_LOG_2PI
    return ReferenceSample(
        z, log_q, lambda: _gaussian_log_density_tril(z, loc.detach(), tril.detach())
    )


def _stable_iaf_step(made: Callable, bias: float, z: torch.Tensor):
    """One stable IAF step: (m, l) = MADE(z), s = sigmoid(l + bias),
    z' = s z + (1 - s) m; returns z' and log |det dz'/dz| = sum_j log s_j."""
    m, logit = made(z)
    logit = logit + bias
    s = torch.sigmoid(logit)
    return s * z + (1 - s) * m, F.logsigmoid(logit).sum(-1)


def _invert_stable_iaf_step(made: Callable, bias: float, order, y: torch.Tensor) -> torch.Tensor:
    """z with step(z) = y, one dimension at a time in the MADE's order:
    z_j = (y_j - (1 - s_j) m_j) / s_j, where m_j, s_j depend on the z's before j only."""
    z = [torch.zeros_like(y[..., 0])] * y.shape[-1]
    for j in order.tolist():
        m, logit = made(torch.stack(z, -1))
        s = torch.sigmoid(logit[..., j] + bias)
        z[j] = (y[..., j] - (1 - s) * m[..., j]) / s
    return torch.stack(z, -1)


def _frozen(module: nn.Module) -> Callable:
    """``module`` called with its parameters as constants."""
    params = {n: p.detach() for n, p in module.named_parameters()}
    return lambda *args: torch.func.functional_call(module, params, args)


def _iaf_sample(vae: nn.Module, x: torch.Tensor, eps: torch.Tensor) -> ReferenceSample:
    """z_0 = loc + scale * eps, z_t = s_t z_{t-1} + (1 - s_t) m_t (Kingma et al., 2016),
    log q(z_T) = log N(z_0; loc, scale^2) - sum_t sum_j log s_tj."""
    loc, scale = vae.encoder(x)
    z = loc + scale * eps
    log_q = normal_log_density(z, loc, scale).sum(-1)
    for step in vae.q.steps:
        z, log_det = _stable_iaf_step(step.arn, step.sigmoid_bias, z)
        log_q = log_q - log_det

    def stopped() -> torch.Tensor:
        y, log_dets = z, 0.0
        for step in reversed(vae.q.steps):
            made = _frozen(step.arn)
            y = _invert_stable_iaf_step(made, step.sigmoid_bias, step.arn.permutation, y)
            log_dets = log_dets + _stable_iaf_step(made, step.sigmoid_bias, y)[1]
        return normal_log_density(y, loc.detach(), scale.detach()).sum(-1) - log_dets

    return ReferenceSample(z, log_q, stopped, loc, scale)


GUIDE_SAMPLES: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], ReferenceSample]]
GUIDE_SAMPLES = {
    "diagonal": _diagonal_sample,
    "low-rank": _low_rank_sample,
    "iaf": _iaf_sample,
}


def reference_sample(vae: nn.Module, x: torch.Tensor, eps: torch.Tensor) -> ReferenceSample:
    return GUIDE_SAMPLES[type(vae.q).registry_name](vae, x, eps)
