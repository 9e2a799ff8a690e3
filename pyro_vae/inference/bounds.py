"""The rest of the importance-weighted family, as Pyro ELBOs built on :class:`IWAE`.

Each reads the same per-datapoint log-weights as IWAE (``IWAE.scaled_log_weights``: every
latent site inside ``plate("data")``, beta-weighted latent sites, particles vectorised in an
outer plate), log w_k = log p(x|z_k) + beta (log p(z_k) - log q(z_k|x)), z_k ~ q(z|x), and
combines them differently. With log-mean-exp LME_k(a_k) = log (1/K) sum_k exp(a_k):

- VR-alpha, the Renyi bound (Li & Turner, 2016), for 0 <= alpha < 1:

      L_alpha(x) = 1/(1 - alpha) LME_k((1 - alpha) log w_k),

  with L_0 = IWAE_K and L_alpha -> ELBO as alpha -> 1; for the same samples it decreases in
  alpha (a power mean of the w_k, of exponent 1 - alpha). Standard (reparameterised) gradient.
- MIWAE(M, K) (Rainforth et al., 2018, "Tighter variational bounds are not necessarily
  better"): the average of M independent IWAE_K bounds over M K particles,

      (1/M) sum_m LME_k(log w_{m,k}),   ELBO = MIWAE(M, 1) <= MIWAE(M, K) <= IWAE_{MK},

  with ``standard``, ``stl`` or ``dreg`` gradients applied within each group (IWAE's
  ``groups``); MIWAE(1, K) = IWAE_K.
- PIWAE(M, K) (Rainforth et al., 2018): the model (theta: decoder, prior, likelihood) takes
  the gradient of IWAE_{MK}, the guide (phi: encoder) that of MIWAE(M, K), from the same M K
  particles; its value is IWAE_{MK}. Standard gradients only, as the paper defines it.
- CIWAE(mix) (Rainforth et al., 2018; their beta): mix ELBO + (1 - mix) IWAE_K on the same K
  particles, ELBO = (1/K) sum_k log w_k. Standard gradient.

Rainforth et al. show that the encoder's gradient signal-to-noise ratio under IWAE_K falls like
1/sqrt(K) while the decoder's rises; MIWAE, PIWAE and CIWAE trade the two off.
"""

from __future__ import annotations

import math

import torch
from pyro import poutine
from pyro.poutine import Trace
from pyro.poutine.util import prune_subsample_sites

from .iwae import IWAE
from .traces import latent_sites


class MIWAE(IWAE):
    """MIWAE(M, K): the average of M independent IWAE_K bounds (Rainforth et al., 2018).

    IWAE with ``groups`` = M: M K vectorised particles, weights normalised within each group
    for the ``stl`` and ``dreg`` gradients (and for the two-layer replay).

    Args:
        num_particles: K, particles per group.
        groups: M, the number of groups.
        grad: ``standard``, ``stl`` or ``dreg``, applied within each group.
        max_plate_nesting: plates in the model.
    """

    def __init__(
        self,
        num_particles: int = 5,
        groups: int = 4,
        grad: str = "standard",
        max_plate_nesting: int = 1,
    ) -> None:
        super().__init__(num_particles, grad, max_plate_nesting, groups=groups)


class RenyiBound(IWAE):
    """The per-datapoint VR-alpha bound (Li & Turner, 2016), 0 <= alpha < 1:
    L_alpha(x) = 1/(1 - alpha) [logsumexp_k((1 - alpha) log w_k) - log K].

    Pyro's ``RenyiELBO`` sums each particle's log-weight over the plates that not every site
    shares, so with a site outside ``plate("data")`` it is a bound on the joint batch, equal to
    this one only for a single datapoint (N = 1); this one is per datapoint and refuses such
    sites. It also gives a ``differentiable_loss``.

    Args:
        num_particles: K.
        alpha: the order; 0 is IWAE_K, and alpha -> 1 is the ELBO (use ``Trace_ELBO``).
        max_plate_nesting: plates in the model.
    """

    def __init__(
        self, num_particles: int = 5, alpha: float = 0.5, max_plate_nesting: int = 1
    ) -> None:
        if not 0 <= alpha < 1:
            raise ValueError(
                f"alpha must be in [0, 1), got {alpha}: alpha = 0 is the IWAE bound, and "
                "alpha -> 1 is the ELBO (use the trace or mean-field estimator)"
            )
        super().__init__(num_particles, "standard", max_plate_nesting)
        self.alpha = float(alpha)

    def _bound(self, log_w: torch.Tensor) -> torch.Tensor:
        a = 1.0 - self.alpha
        return (torch.logsumexp(a * log_w, dim=0) - math.log(self.num_particles)) / a


class CIWAE(IWAE):
    """CIWAE (Rainforth et al., 2018): mix ELBO + (1 - mix) IWAE_K on the same K particles,
    ELBO = (1/K) sum_k log w_k; the standard gradient.

    Args:
        num_particles: K.
        mix: the weight of the ELBO, in [0, 1] (the paper's beta; here beta weights the KL).
        max_plate_nesting: plates in the model.
    """

    def __init__(self, num_particles: int = 5, mix: float = 0.5, max_plate_nesting: int = 1):
        if not 0 <= mix <= 1:
            raise ValueError(f"mix must be in [0, 1] (1: the ELBO, 0: IWAE), got {mix}")
        super().__init__(num_particles, "standard", max_plate_nesting)
        self.mix = float(mix)

    def _bound(self, log_w: torch.Tensor) -> torch.Tensor:
        iwae = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        return self.mix * log_w.mean(0) + (1.0 - self.mix) * iwae


class PIWAE(IWAE):
    """PIWAE(M, K) (Rainforth et al., 2018): the model's parameters theta take the gradient of
    IWAE_{MK}, the guide's parameters phi that of MIWAE(M, K), from the same M K particles.

    Neither parameter set is named: with log w from the guide's z, and
    log w_theta = log p_theta(x, sg z) - sg(log q(z|x)), the model replayed at the detached
    latent values (so that it moves with theta only), the surrogate

        IWAE_{MK}(log w_theta) + MIWAE(log w) - MIWAE(log w_theta)

    has the value IWAE_{MK} (the last two terms are equal), the theta-gradient of IWAE_{MK}
    (the two MIWAE terms have the same theta-gradient) and the phi-gradient of MIWAE. A prior
    that reads the encoder (the VampPrior's pseudo-inputs pass through it) makes some of phi
    model parameters too: their dependence through log p(z) at fixed z then takes IWAE_{MK}'s
    weights, and only their path through z and log q MIWAE's. The model runs twice per step.

    Args:
        num_particles: K, particles per group.
        groups: M, the number of groups.
        max_plate_nesting: plates in the model.
    """

    def __init__(self, num_particles: int = 5, groups: int = 4, max_plate_nesting: int = 1):
        super().__init__(num_particles, "standard", max_plate_nesting, groups=groups)

    def _model_log_weights(self, model, guide_trace: Trace, args, kwargs) -> torch.Tensor:
        """log w_theta: the model replayed at the guide's latent values, detached, minus the
        guide's log-densities, detached."""
        detached = guide_trace.copy()
        for name in latent_sites(guide_trace):
            site = detached.nodes[name] = dict(guide_trace.nodes[name])
            site["value"] = site["value"].detach()
            if torch.is_tensor(site["log_prob"]):
                site["log_prob"] = site["log_prob"].detach()
        model = poutine.replay(self._vectorized_num_particles(model), trace=detached)
        model_trace = prune_subsample_sites(poutine.trace(model).get_trace(*args, **kwargs))
        model_trace.compute_log_prob()
        return self._as_particles(self.scaled_log_weights(model_trace, detached))

    def per_datapoint_bound(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """IWAE_{MK}(x) per datapoint, shape (N,); its gradients are PIWAE's."""
        ((model_trace, guide_trace),) = self._get_traces(model, guide, args, kwargs)
        log_w = self._as_particles(self.scaled_log_weights(model_trace, guide_trace))
        log_w_theta = self._model_log_weights(model, guide_trace, args, kwargs)
        iwae = torch.logsumexp(log_w_theta, dim=0) - math.log(self.num_particles)
        return iwae + (self._bound(log_w) - self._bound(log_w_theta))
