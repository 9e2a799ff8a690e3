"""Hand-written PyTorch losses: the yardstick every Pyro objective is checked against.

No density or KL here comes from ``pyro`` or ``torch.distributions``: each is written out from
its formula, so that agreement with Pyro's ELBO is evidence, not a tautology (Pyro's estimator
classes are imported only to pick the matching reference). With
z = loc(x) + scale(x) * eps, eps ~ N(0, I):

    ELBO_beta(x) = log p(x|z) - beta * KL,
    KL_mc        = log q(z|x) - log p(z)                                 (Trace_ELBO)
    KL_analytic  = sum_j [log(s_p/s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2]
                                                           (TraceMeanField_ELBO; Gaussian p)

Every registered likelihood and prior must have an entry here; a test enforces it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from .conditional import ConditionalVAE
from .hierarchical import TwoLayerVAE
from .iwae import IWAE
from .kl_shaping import CapacityELBO, FreeBitsELBO, KLShapingELBO
from .sync_free import MeanFieldELBO, MonteCarloELBO

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def normal_log_density(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(x; loc, scale^2)."""
    return -0.5 * ((x - loc) / scale) ** 2 - torch.log(scale) - HALF_LOG_2PI


def continuous_bernoulli_log_normalizer(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) for lambda = sigmoid(eta), written in the logit eta.

    C = 2 atanh(1 - 2 lambda) / (1 - 2 lambda) = eta / tanh(eta / 2), which tends to 2 as
    eta -> 0; near 0 we use the series eta / tanh(eta/2) = 2 + eta^2 / 6 - eta^4 / 360.
    """
    small = logits.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = torch.log(safe / torch.tanh(safe / 2))
    series = torch.log(2 + logits**2 / 6 - logits**4 / 360)
    return torch.where(small, series, exact)


# --- log p(x|z): name -> f(likelihood module, decoder output, x) -> per-image sum ------------


def _bernoulli(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x * out - F.softplus(out)).sum(-1)


def _continuous_bernoulli(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x * out - F.softplus(out) + continuous_bernoulli_log_normalizer(out)).sum(-1)


def _gaussian(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(lik.sigma, dtype=out.dtype, device=out.device)
    return normal_log_density(x, out, sigma).sum(-1)


def _gaussian_learned(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    sigma = lik.sigma_floor + F.softplus(lik.raw_sigma)
    return normal_log_density(x, out, sigma).sum(-1)


def _laplace(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    b = lik.scale.floor + F.softplus(lik.scale.raw)
    return (-(x - out).abs() / b - torch.log(2 * b)).sum(-1)


def _beta(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Beta(x'; a, b) + log(1 - 2 eps) per pixel, x' = eps + (1 - 2 eps) x."""
    d, eps = lik.data_dim, lik.eps
    a = F.softplus(out[..., :d]) + lik.min_concentration
    b = F.softplus(out[..., d:]) + lik.min_concentration
    xs = eps + (1 - 2 * eps) * x
    log_beta_fn = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    log_density = (a - 1) * torch.log(xs) + (b - 1) * torch.log1p(-xs) - log_beta_fn
    return (log_density + math.log(1 - 2 * eps)).sum(-1)


def _count_log_mean(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log mu: the decoder output, or log(library size) + log-softmax of it."""
    eta = out[..., : lik.data_dim]
    if lik.library == "none":
        return eta
    return torch.log(x.sum(-1, keepdim=True)) + eta - torch.logsumexp(eta, -1, keepdim=True)


def _poisson(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    log_mu = _count_log_mean(lik, out, x)
    return (x * log_mu - log_mu.exp() - torch.lgamma(x + 1)).sum(-1)


def negative_binomial_log_density(
    x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise log NB(x; mu, theta) and log NB(0; mu, theta), in the mean /
    inverse-dispersion form (as scVI writes it):
    lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)
        + theta log(theta / (theta + mu)) + x log(mu / (theta + mu))."""
    theta = log_theta.exp()
    log_theta_mu = torch.logaddexp(log_theta, log_mu)  # log(theta + mu)
    at_zero = theta * (log_theta - log_theta_mu)
    log_nb = (
        torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
        + at_zero
        + x * (log_mu - log_theta_mu)
    )
    return log_nb, at_zero


def _negative_binomial_terms(lik: nn.Module, out: torch.Tensor, x: torch.Tensor):
    return negative_binomial_log_density(x, _count_log_mean(lik, out, x), lik.log_theta)


def _negative_binomial(lik: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return _negative_binomial_terms(lik, out, x)[0].sum(-1)


def _zero_inflated_negative_binomial(
    lik: nn.Module, out: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """x = 0: log(pi + (1 - pi) NB(0)); x > 0: log(1 - pi) + log NB(x); pi = sigmoid(gate)."""
    log_nb, nb_zero = _negative_binomial_terms(lik, out, x)
    gate = out[..., lik.data_dim :]
    log_pi, log_not_pi = -F.softplus(-gate), -F.softplus(gate)
    zero = torch.logaddexp(log_pi, log_not_pi + nb_zero)
    return torch.where(x == 0, zero, log_not_pi + log_nb).sum(-1)


LOG_LIKELIHOODS: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "bernoulli": _bernoulli,
    "continuous-bernoulli": _continuous_bernoulli,
    "gaussian": _gaussian,
    "gaussian-learned": _gaussian_learned,
    "laplace": _laplace,
    "beta": _beta,
    "poisson": _poisson,
    "negative-binomial": _negative_binomial,
    "zero-inflated-negative-binomial": _zero_inflated_negative_binomial,
}

# --- log p(z) and, where it exists, KL(q || p): name -> f(prior module, ...) ------------------


# Gaussian priors by their (loc, scale); the KL and log-density below are shared.
_GAUSSIAN_PRIOR_PARAMS: dict[str, Callable[[nn.Module, torch.Tensor], tuple]] = {
    "normal": lambda prior, like: (torch.zeros_like(like), torch.ones_like(like)),
    "learned-normal": lambda prior, like: (prior.loc, prior.log_scale.exp()),
}


def _normal_params(prior: nn.Module, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _GAUSSIAN_PRIOR_PARAMS[type(prior).registry_name](prior, like)


def _normal_log_prior(prior: nn.Module, z: torch.Tensor) -> torch.Tensor:
    loc, scale = _normal_params(prior, z)
    return normal_log_density(z, loc, scale).sum(-1)


def _mixture_log_prior(prior: nn.Module, z: torch.Tensor) -> torch.Tensor:
    log_weights = prior.logits - torch.logsumexp(prior.logits, -1)  # (K,)
    comp = normal_log_density(z.unsqueeze(-2), prior.locs, prior.log_scales.exp()).sum(-1)
    return torch.logsumexp(log_weights + comp, dim=-1)


def normal_kl_per_dimension(
    prior: nn.Module, loc: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """KL(N(loc, scale^2) || p(z_j)) for each dimension j of a Gaussian prior."""
    p_loc, p_scale = _normal_params(prior, loc)
    return torch.log(p_scale / scale) + (scale**2 + (loc - p_loc) ** 2) / (2 * p_scale**2) - 0.5


def _normal_kl(prior: nn.Module, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return normal_kl_per_dimension(prior, loc, scale).sum(-1)


def _vamp_log_prior(prior: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k N(z; loc(u_k), scale(u_k)^2), u_k = clip(pseudo-input k, 0, 1)."""
    u = torch.clamp(prior.pseudo_inputs, 0.0, 1.0)
    loc, scale = prior.encoder(u)  # (K, z_dim)
    comp = normal_log_density(z.unsqueeze(-2), loc, scale).sum(-1)
    return torch.logsumexp(comp, dim=-1) - math.log(u.shape[0])


LOG_PRIORS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "normal": _normal_log_prior,
    "learned-normal": _normal_log_prior,
    "mixture": _mixture_log_prior,
    "vamp": _vamp_log_prior,
}

# priors whose density depends on the encoder's parameters (IWAE-gradient references below)
ENCODER_PRIORS = {"vamp"}

ANALYTIC_KLS: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "normal": _normal_kl,
    "learned-normal": _normal_kl,
    # "mixture": no closed form; estimators fall back to Monte Carlo
}


# --- q(z|x): name -> f(vae, x, eps) -> ReferenceSample -----------------------------------


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
    fam = vae.posterior
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
    for step in vae.posterior.steps:
        z, log_det = _stable_iaf_step(step.arn, step.sigmoid_bias, z)
        log_q = log_q - log_det

    def stopped() -> torch.Tensor:
        y, log_dets = z, 0.0
        for step in reversed(vae.posterior.steps):
            made = _frozen(step.arn)
            y = _invert_stable_iaf_step(made, step.sigmoid_bias, step.arn.permutation, y)
            log_dets = log_dets + _stable_iaf_step(made, step.sigmoid_bias, y)[1]
        return normal_log_density(y, loc.detach(), scale.detach()).sum(-1) - log_dets

    return ReferenceSample(z, log_q, stopped, loc, scale)


POSTERIOR_SAMPLES: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], ReferenceSample]]
POSTERIOR_SAMPLES = {
    "diagonal": _diagonal_sample,
    "low-rank": _low_rank_sample,
    "iaf": _iaf_sample,
}


def reference_sample(vae: nn.Module, x: torch.Tensor, eps: torch.Tensor) -> ReferenceSample:
    return POSTERIOR_SAMPLES[type(vae.posterior).registry_name](vae, x, eps)


def _sample_and_decode(vae: nn.Module, x: torch.Tensor, eps: torch.Tensor):
    """(the reference sample of q(z|x), log p(x|z) summed over pixels). For a conditional
    VAE the decoder reads [z, c] and the likelihood scores the pixels before the context."""
    q = reference_sample(vae, x, eps)
    name = type(vae.likelihood).registry_name
    if isinstance(vae, ConditionalVAE):
        pixels, context = x[..., : vae.data_dim], x[..., vae.data_dim :]
        context = context.expand(*q.z.shape[:-1], context.shape[-1])
        out = vae.decoder(torch.cat([q.z, context], -1))
        return q, LOG_LIKELIHOODS[name](vae.likelihood, out, pixels)
    return q, LOG_LIKELIHOODS[name](vae.likelihood, vae.decoder(q.z), x)


def _two_layer_log_weights(
    vae: nn.Module,
    x: torch.Tensor,
    eps: tuple[torch.Tensor, torch.Tensor],
    beta: float,
    stop_q_params: bool = False,
) -> torch.Tensor:
    """Two stochastic layers: z1 = loc(x) + scale(x) eps1, z2 = loc'(z1) + scale'(z1) eps2,
    log w = log p(x|z1) + beta (log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1)).
    With ``stop_q_params`` log q is evaluated with the encoders' parameters held constant,
    q(z2|z1) still moving with z1."""
    eps1, eps2 = eps
    loc1, scale1 = vae.encoder(x)
    z1 = loc1 + scale1 * eps1
    loc2, scale2 = vae.upper_encoder(z1)
    z2 = loc2 + scale2 * eps2
    name = type(vae.likelihood).registry_name
    log_lik = LOG_LIKELIHOODS[name](vae.likelihood, vae.decoder(z1), x)
    if beta == 0:
        return log_lik
    if stop_q_params:
        loc1, scale1 = loc1.detach(), scale1.detach()
        loc2, scale2 = _frozen(vae.upper_encoder)(z1)
    log_q = normal_log_density(z1, loc1, scale1).sum(-1) + normal_log_density(z2, loc2, scale2).sum(
        -1
    )
    p_loc, p_scale = vae.upper_decoder(z2)
    log_p = normal_log_density(z1, p_loc, p_scale).sum(-1)
    log_p = log_p + LOG_PRIORS[type(vae.prior).registry_name](vae.prior, z2)
    return log_lik + beta * (log_p - log_q)


def _is_two_layer(vae: nn.Module) -> bool:
    return isinstance(vae, TwoLayerVAE)


def _is_diagonal(vae: nn.Module) -> bool:
    return type(vae.posterior).registry_name == "diagonal"


def reference_elbo(
    vae: nn.Module,
    x: torch.Tensor,
    eps: torch.Tensor,
    beta: float = 1.0,
    analytic_kl: bool = False,
) -> torch.Tensor:
    """Per-image ELBO_beta(x) at the z that the noise eps gives, from the VAE's networks."""
    if _is_two_layer(vae):  # Monte Carlo KL only: no estimator may use per-site analytic KLs
        return _two_layer_log_weights(vae, x, eps, beta)
    q, log_lik = _sample_and_decode(vae, x, eps)
    prior_name = type(vae.prior).registry_name
    if analytic_kl and prior_name in ANALYTIC_KLS and _is_diagonal(vae):
        kl = ANALYTIC_KLS[prior_name](vae.prior, q.loc, q.scale)
    else:
        kl = q.log_q - LOG_PRIORS[prior_name](vae.prior, q.z)
    if beta == 0:
        return log_lik
    return log_lik - beta * kl


def reference_log_weights(
    vae: nn.Module,
    x: torch.Tensor,
    eps: torch.Tensor,
    beta: float = 1.0,
    stop_q_params: bool = False,
    prior: nn.Module | None = None,
) -> torch.Tensor:
    """log w_k = log p(x|z_k) + beta (log p(z_k) - log q(z_k|x)), z_k from the noise eps_k.

    ``eps`` has shape (K, N, z_dim); the result (K, N). With ``stop_q_params`` the density
    log q is evaluated with its parameters held constant, so it is differentiated through z
    only. ``prior`` replaces the VAE's prior module in log p(z). For the two-layer VAE
    ``eps`` is the pair (eps1, eps2).
    """
    if _is_two_layer(vae):
        return _two_layer_log_weights(vae, x, eps, beta, stop_q_params)
    q, log_lik = _sample_and_decode(vae, x, eps)
    if beta == 0:
        return log_lik
    log_q = q.log_q_stopped() if stop_q_params else q.log_q
    prior = vae.prior if prior is None else prior
    log_p = LOG_PRIORS[type(prior).registry_name](prior, q.z)
    return log_lik + beta * (log_p - log_q)


def _with_frozen_encoder(prior: nn.Module) -> nn.Module:
    """A copy of an encoder-built prior whose encoder parameters are constants."""
    frozen = copy.deepcopy(prior)
    for p in frozen.encoder.parameters():
        p.requires_grad_(False)
    return frozen


def reference_iwae(vae: nn.Module, x: torch.Tensor, eps: torch.Tensor, beta: float = 1.0):
    """Per-image L_K(x) = log (1/K) sum_k w_k (Burda et al., 2016); K = eps.shape[0]."""
    log_w = reference_log_weights(vae, x, eps, beta)
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def reference_iwae_gradients(
    vae: nn.Module, x: torch.Tensor, eps: torch.Tensor, beta: float, grad: str
) -> list[torch.Tensor]:
    """Gradients of -sum_n L_K(x_n) for every parameter of ``vae``, by the named estimator.

    Decoder, prior and likelihood parameters (theta) get the plain gradient under every
    estimator. Encoder parameters (phi), with w~ = softmax_k(log w):
      standard: d/dphi of -sum_n L_K, score term included;
      stl:      sum_k w~_k d(log w_k)/dphi with log q differentiated through z only;
      dreg:     the same with each term weighted by c_k = 1 - beta + beta w~_k (Tucker et al.,
                2019, eq. 6 at beta = 1: c_k = w~_k).
    A prior built from the encoder (VampPrior) makes phi a model parameter too: that direct
    dependence gets the plain weight, beta sum_k w~_k d(log p(z_k))/dphi at fixed z_k, and
    only the path through z_k is reweighted.
    Written with separate surrogates per parameter group, unlike the estimator's hooks.
    """
    params = list(vae.parameters())
    encoder = {id(p) for p in vae.guide_parameters()}
    plain = -reference_iwae(vae, x, eps, beta).sum()
    theta_grads = torch.autograd.grad(plain, params, allow_unused=True, retain_graph=True)
    if grad == "standard":
        phi_grads = theta_grads
    else:
        prior_name = type(vae.prior).registry_name
        encoder_prior = prior_name in ENCODER_PRIORS
        frozen = _with_frozen_encoder(vae.prior) if encoder_prior else None
        log_w = reference_log_weights(vae, x, eps, beta, stop_q_params=True, prior=frozen)
        normalised = torch.softmax(log_w.detach(), dim=0)
        weights = normalised
        if grad == "dreg":
            weights = weights * (1 - beta + beta * weights)
        surrogate = -(weights * log_w).sum()
        if encoder_prior and beta != 0:
            z = reference_sample(vae, x, eps).z.detach()
            log_p = LOG_PRIORS[prior_name](vae.prior, z)
            surrogate = surrogate - (beta * normalised * log_p).sum()
        phi_grads = torch.autograd.grad(surrogate, params, allow_unused=True)
    return [
        torch.zeros_like(p) if g is None else g
        for p, g in (
            (p, phi if id(p) in encoder else theta)
            for p, phi, theta in zip(params, phi_grads, theta_grads, strict=True)
        )
    ]


def reference_shaped_kl_loss(
    vae: nn.Module, x: torch.Tensor, eps: torch.Tensor, elbo: KLShapingELBO
) -> torch.Tensor:
    """Free bits (Kingma et al., 2016) or capacity (Burgess et al., 2018), for a batch:
    -sum_n log p(x_n|z_n) + beta * N * sum_j max(lambda, mean_n KL_nj)
    or  ... + beta * N * gamma * |mean_n sum_j KL_nj - C|."""
    if not _is_diagonal(vae):
        raise MissingReference("free bits and capacity need the diagonal Gaussian guide")
    q, log_lik = _sample_and_decode(vae, x, eps)
    kl = normal_kl_per_dimension(vae.prior, q.loc, q.scale)  # (N, D)
    n = x.shape[0]
    if isinstance(elbo, FreeBitsELBO):
        shaped = n * torch.clamp(kl.mean(0), min=elbo.free_bits).sum()
    elif isinstance(elbo, CapacityELBO):
        shaped = n * elbo.gamma * torch.abs(kl.sum(1).mean() - elbo.capacity)
    else:
        raise MissingReference(f"no hand-written reference for {type(elbo).__name__}")
    if vae.beta == 0:
        return -log_lik.sum()
    return -log_lik.sum() + vae.beta * shaped


def _two_layer_noise(vae: nn.Module, x: torch.Tensor, z: tuple[torch.Tensor, torch.Tensor]):
    z1, z2 = z
    loc1, scale1 = vae.encoder(x)
    loc2, scale2 = vae.upper_encoder(z1)
    return (z1 - loc1) / scale1, (z2 - loc2) / scale2


def _particles(eps, particles: int, n: int) -> object:
    """eps (or each of a tuple of eps) reshaped to (particles, n, latent size)."""
    if isinstance(eps, tuple):
        return tuple(e.reshape(particles, n, e.shape[-1]) for e in eps)
    return eps.reshape(particles, n, eps.shape[-1])


def reference_loss(vae: nn.Module, elbo: object, x: torch.Tensor, z: torch.Tensor):
    """The hand-written loss that ``elbo`` estimates, at the guide's sample ``z``.

    The guide family recovers the noise eps (for the diagonal Gaussian, (z - loc) / scale),
    and the reference redraws z from it by hand. The estimator decides the reference: Monte
    Carlo KL for ``Trace_ELBO`` (and its sync-free twin), analytic KL where one exists for
    ``TraceMeanField_ELBO`` (and twin), the K-particle bound for ``IWAE`` (whose value does not
    depend on the gradient estimator; compare gradients with :func:`reference_iwae_gradients`),
    free bits or capacity for the KL-shaping objectives.
    """
    with torch.no_grad():
        eps = (
            _two_layer_noise(vae, x, z)
            if _is_two_layer(vae)
            else (vae.posterior.noise(vae.encoder, x, z.detach()))
        )
    particles = getattr(elbo, "num_particles", 1)
    if isinstance(elbo, (Trace_ELBO, TraceMeanField_ELBO)) and particles > 1:
        raise MissingReference("the reference of Pyro's ELBOs takes num_particles=1")
    if isinstance(elbo, IWAE):
        return -reference_iwae(vae, x, _particles(eps, particles, x.shape[0]), beta=vae.beta).sum()
    if isinstance(elbo, KLShapingELBO):
        return reference_shaped_kl_loss(vae, x, eps, elbo)
    if isinstance(elbo, (Trace_ELBO, TraceMeanField_ELBO, MonteCarloELBO, MeanFieldELBO)):
        if particles > 1:
            eps = _particles(eps, particles, x.shape[0])
        analytic = isinstance(elbo, (TraceMeanField_ELBO, MeanFieldELBO))
        return -reference_elbo(vae, x, eps, beta=vae.beta, analytic_kl=analytic).sum() / particles
    raise MissingReference(f"no hand-written reference for {type(elbo).__name__}")


class _KeepSample(nn.Module):
    """``guide`` is the VAE's guide, keeping the z it returns (a module method, so that
    estimators which re-run the guide with constant parameters can)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.z: torch.Tensor | tuple | None = None

    def guide(self, x: torch.Tensor):
        self.z = self.vae.guide(x)
        return self.z


def pyro_and_reference_loss(
    vae: nn.Module, elbo: object, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pyro's differentiable loss and the hand-written one, for the same z (the guide is
    wrapped to keep the z it sampled, so no random-number stream has to line up)."""
    keeper = _KeepSample(vae)
    pyro_loss = elbo.differentiable_loss(vae.model, keeper.guide, x)
    return pyro_loss, reference_loss(vae, elbo, x, keeper.z)


class ReferenceMismatch(RuntimeError):
    """Pyro's loss and the hand-written loss disagree."""


class MissingReference(ValueError):
    """A likelihood or prior has no hand-written counterpart to be checked against."""


def _require_reference(vae: nn.Module) -> None:
    for kind, module, table, table_name in [
        ("likelihood", vae.likelihood, LOG_LIKELIHOODS, "LOG_LIKELIHOODS"),
        ("prior", vae.prior, LOG_PRIORS, "LOG_PRIORS"),
        ("guide", vae.posterior, POSTERIOR_SAMPLES, "POSTERIOR_SAMPLES"),
    ]:
        name = getattr(type(module), "registry_name", type(module).__name__)
        if name not in table:
            raise MissingReference(
                f"no hand-written reference for the {kind} {name!r}: add one to "
                f"pyro_vae.reference.{table_name} or skip the check (--skip-reference-check)"
            )


def check_against_reference(
    vae: nn.Module,
    elbo: object,
    x: torch.Tensor,
    rtol: float | None = None,
    step: Callable | None = None,
) -> tuple[float, float]:
    """Raise :class:`ReferenceMismatch` unless the two losses agree to ``rtol``.

    ``step`` checks a compiled step instead (:class:`pyro_vae.compiled.CompiledStep`, which
    returns its loss and the z it sampled) against the reference of ``elbo``.

    The default tolerance is 1e-4 in float32 (summation order differs) and 1e-9 in float64.
    """
    _require_reference(vae)
    if rtol is None:
        rtol = 1e-9 if x.dtype == torch.float64 else 1e-4
    with torch.no_grad():
        if step is None:
            pyro_loss, ref_loss = pyro_and_reference_loss(vae, elbo, x)
        else:
            pyro_loss, z = step(x, vae.beta)
            ref_loss = reference_loss(vae, elbo, x, z)
    p, r = float(pyro_loss), float(ref_loss)
    if not (math.isfinite(p) and math.isfinite(r)) or abs(p - r) > rtol * max(abs(r), 1.0):
        raise ReferenceMismatch(
            f"Pyro's loss {p:.6f} differs from the hand-written loss {r:.6f} "
            f"(relative {abs(p - r) / max(abs(r), 1.0):.2e} > {rtol:.0e}) on the first batch: "
            "the objective being optimised is not the one the model describes"
        )
    return p, r
