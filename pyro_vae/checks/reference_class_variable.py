"""Hand-written losses of the class-latent VAEs (:mod:`pyro_vae.model.class_variable`), in plain
torch: an explicit sum over the K classes, no Pyro.

With q_k = q(y = k | x), z_k = loc(x, k) + scale(x, k) * eps_k, and

    f_k(x) = log p(x | k, z_k) + beta_z (log p(z_k) - log q(z_k | x, k)),

an unlabelled row's objective is, for each treatment of the class site,

    enumerate:  U(x) = sum_k q_k [ f_k + beta_y (log p(k) - log q_k) ]          (exact in y)
    score:      f_y + beta_y (log p(y) - log q_y)          at the drawn class y (its value)
    relaxed:    log p(x | y, z) + beta_z (...) + beta_y (log p_tau(y) - log q_tau(y | x))
                at the drawn point y of the simplex, with the Concrete densities p_tau, q_tau

and an M2 labelled row (x, y) adds up L(x, y) + alpha log q(y | x), with
L(x, y) = log p(x | y, z) + log p(y) + beta_z (log p(z) - log q(z | x, y)).

The draws are the guide's (its return value); the noise is recovered from them so that the
gradients flow as the reparameterised draws' do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..densities import normal_log_density
from .reference_densities import LOG_LIKELIHOODS, LOG_PRIORS


def concrete_log_density(y: torch.Tensor, logits: torch.Tensor, tau: float) -> torch.Tensor:
    """log density of the Concrete / Gumbel-softmax distribution at a point y of the simplex,
    as torch's ``RelaxedOneHotCategorical`` defines it (the exp-relaxed density of log y,
    Maddison et al., 2017, eq. 7 in log space, plus the Jacobian -sum log y):

    log Gamma(K) + (K - 1) log tau + sum_k (l_k - tau s_k) - K logsumexp_k(l_k - tau s_k)
    - sum_k s_k,     s = log y, l = normalised logits."""
    k = y.shape[-1]
    s = torch.log(y)
    logits = logits - torch.logsumexp(logits, -1, keepdim=True)
    scores = logits - tau * s
    return (
        math.lgamma(k)
        + (k - 1) * math.log(tau)
        + scores.sum(-1)
        - k * torch.logsumexp(scores, -1)
        - s.sum(-1)
    )


def _relaxed_draw(y: torch.Tensor, logits: torch.Tensor, tau: float) -> torch.Tensor:
    """The guide's relaxed draw y = softmax((l + g) / tau) rebuilt from its Gumbel noise g,
    so that it moves with the logits as the reparameterised draw does."""
    logits = logits - torch.logsumexp(logits, -1, keepdim=True)
    gumbel = (tau * torch.log(y) - logits).detach()
    return torch.softmax((logits + gumbel) / tau, -1)


def _z_terms(vae: nn.Module, pixels: torch.Tensor, y: torch.Tensor, z: torch.Tensor):
    """(log p(x | y, z), log p(z) - log q(z | x, y)) at the guide's draw z, rebuilt as
    loc + scale * eps."""
    loc, scale = vae.encoder(pixels, y)
    eps = ((z - loc) / scale).detach()
    z = loc + scale * eps
    log_q = normal_log_density(z, loc, scale).sum(-1)
    log_p = LOG_PRIORS[type(vae.prior).registry_name](vae.prior, z)
    out = vae.decoder(z, y)
    log_lik = LOG_LIKELIHOODS[type(vae.likelihood).registry_name](vae.likelihood, out, pixels)
    return log_lik, log_p - log_q


def unlabelled_objective(
    vae: nn.Module, pixels: torch.Tensor, y: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """The per-row objective of an unlabelled row (see the module doc), shape (N,): ``y`` and
    ``z`` are the guide's draws of the class site and z (for ``enumerate``: every class in
    turn along the first dimension, z of shape (K, N, z_dim))."""
    k = vae.classes
    logits = vae.classifier(pixels)
    log_q = torch.log_softmax(logits, -1)  # (N, K)
    log_prior = math.log(1.0 / k)
    beta_y, beta_z = vae.beta_discrete, vae.beta
    name = type(vae.discrete).__name__
    if name == "Enumerated":
        classes = torch.eye(k, dtype=pixels.dtype, device=pixels.device).unsqueeze(1)
        log_lik, kl_term = _z_terms(vae, pixels, classes, z)  # (K, N)
        f = log_lik + beta_z * kl_term
        q = log_q.exp().T  # (K, N)
        return (q * f).sum(0) + beta_y * (q * (log_prior - log_q.T)).sum(0)
    if name == "ScoreFunction":
        log_lik, kl_term = _z_terms(vae, pixels, y, z)
        return log_lik + beta_z * kl_term + beta_y * (log_prior - (y * log_q).sum(-1))
    if name == "Relaxed":
        tau = vae.discrete.temperature
        y = _relaxed_draw(y, logits, tau)
        log_lik, kl_term = _z_terms(vae, pixels, y, z)
        log_p_y = concrete_log_density(y, torch.zeros_like(logits), tau)
        log_q_y = concrete_log_density(y, logits, tau)
        return log_lik + beta_z * kl_term + beta_y * (log_p_y - log_q_y)
    raise ValueError(f"no hand-written objective for the discrete site {name}")


def labelled_objective(
    vae: nn.Module, pixels: torch.Tensor, y: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """L(x, y) + alpha log q(y | x) per row, for one-hot labels y and the guide's z."""
    log_lik, kl_term = _z_terms(vae, pixels, y, z)
    log_q_y = (y * torch.log_softmax(vae.classifier(pixels), -1)).sum(-1)
    return log_lik + math.log(1.0 / vae.classes) + vae.beta * kl_term + vae.alpha * log_q_y


def _rows(vae: nn.Module, x: torch.Tensor):
    """(pixels, one-hot labels with class 0 on unlabelled rows, which rows are labelled);
    a joint model's rows are all unlabelled."""
    if not hasattr(vae, "split"):
        return x, None, torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    pixels, labels = x[..., : vae.data_dim], x[..., vae.data_dim :]
    labelled = labels.sum(-1) > 0
    placeholder = F.one_hot(torch.zeros((), dtype=torch.long), vae.classes).to(labels)
    return pixels, torch.where(labelled.unsqueeze(-1), labels, placeholder), labelled


def reference_class_loss(vae: nn.Module, x: torch.Tensor, draws: tuple) -> torch.Tensor:
    """-objective summed over the batch, for the guide's ``draws``: (y, z) for ``joint``,
    (y, z, z_labelled) for ``m2`` (rows with a label take the labelled objective)."""
    if not hasattr(vae, "split"):  # joint: every row unlabelled
        y, z = draws
        return -unlabelled_objective(vae, x, y, z).sum()
    y, z, z_labelled = draws
    pixels, labels, labelled = _rows(vae, x)
    unlabelled = unlabelled_objective(vae, pixels, y, z)
    with_label = labelled_objective(vae, pixels, labels, z_labelled)
    return -torch.where(labelled, with_label, unlabelled).sum()


def reference_score_surrogate(vae: nn.Module, x: torch.Tensor, draws: tuple) -> torch.Tensor:
    """The score-function estimator's surrogate loss by hand, whose gradient is
    ``TraceGraph_ELBO``'s: with f the unlabelled branch's objective at the drawn class y
    (zero on labelled rows, whose branch it is masked out of) and b(x) the baseline,

        -[ sum_n objective_n  +  sum_(n unlabelled) log q(y_n | x_n) (f_n - b_n)_detached ]
        + sum_n (f_n,detached - b_n)^2,

    where log q(y | x) enters the objective's own terms as a constant (its gradient is the
    score term's alone)."""
    pixels, labels, labelled = _rows(vae, x)
    y, z = draws[0], draws[1]
    log_q_y = (y * torch.log_softmax(vae.classifier(pixels), -1)).sum(-1)
    log_lik, kl_term = _z_terms(vae, pixels, y, z)
    f = log_lik + vae.beta * kl_term + vae.beta_discrete * (math.log(1.0 / vae.classes) - log_q_y)
    f_const_q = f + vae.beta_discrete * (log_q_y - log_q_y.detach())
    cost = torch.where(labelled, torch.zeros_like(f), f)
    objective = torch.where(labelled, torch.zeros_like(f), f_const_q)
    if labels is not None:
        with_label = labelled_objective(vae, pixels, labels, draws[2])
        objective = objective + torch.where(labelled, with_label, torch.zeros_like(f))
    baseline = vae.discrete.baseline(pixels).squeeze(-1)
    score = torch.where(labelled, torch.zeros_like(f), log_q_y * (cost - baseline).detach())
    surrogate = objective.sum() + score.sum()
    return -surrogate + ((cost.detach() - baseline) ** 2).sum()
