"""Objectives that reshape the KL term against posterior collapse.

With the reconstruction term R = sum_n E_q[log p(x_n|z)] and the analytic KL per datapoint n
and latent dimension j, KL_nj = KL(q(z_j|x_n) || p(z_j)), over a batch of N images:

- free bits (Kingma et al., 2016, "Improved variational inference with inverse autoregressive
  flow", sec. 3.5 / appendix): loss = -R + N * sum_j max(lambda, (1/N) sum_n KL_nj). A latent
  dimension whose average KL is under lambda nats gets no gradient pushing it further towards
  the prior, so it is not switched off for free.
- capacity (Burgess et al., 2018, "Understanding disentangling in beta-VAE", eq. 8):
  loss = -R + N * gamma * |(1/N) sum_n sum_j KL_nj - C|, with the capacity C raised linearly
  from 0 to C_max over a number of steps (a schedule): the rate is pulled towards C rather
  than to 0.

Both need the KL per dimension in closed form (a factorised Gaussian guide and prior:
``normal`` or ``learned-normal``). The latent site's weight (beta) multiplies the shaped term.
"""

from __future__ import annotations

import torch
from pyro.poutine import Trace
from torch.distributions import kl_divergence

from .surrogate import SurrogateELBO


class KLShapingELBO(SurrogateELBO):
    """Base: reconstruction plus ``shape(KL)``; one particle, reparameterised guide."""

    def __init__(self) -> None:
        super().__init__(num_particles=1, max_plate_nesting=1)

    def shape(self, kl: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """The KL term of the loss for a batch, from KL_nj of shape (N, D)."""
        raise NotImplementedError

    def terms(self, model_trace: Trace, guide_trace: Trace) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of observed log-likelihoods, weighted shaped KL) for the batch."""
        reconstruction = 0.0
        shaped = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                reconstruction = reconstruction + site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            if guide_site["mask"] is False:
                continue
            q, p = guide_site["fn"], site["fn"]
            try:
                kl = kl_divergence(q.base_dist, p.base_dist)
            except (AttributeError, NotImplementedError):
                raise ValueError(
                    f"{type(self).__name__} needs the KL of site {name!r} per dimension in "
                    "closed form: a factorised Gaussian guide and prior (normal, learned-normal)"
                ) from None
            kl = kl.reshape(kl.shape[0], -1)  # (N, D)
            shaped = shaped + guide_site["scale"] * self.shape(kl)
        return reconstruction, shaped

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        ((model_trace, guide_trace),) = self._get_traces(model, guide, args, kwargs)
        reconstruction, shaped = self.terms(model_trace, guide_trace)
        return -reconstruction + shaped


class FreeBitsELBO(KLShapingELBO):
    """-R + N sum_j max(lambda, mean_n KL_nj), lambda = ``free_bits`` nats per dimension."""

    def __init__(self, free_bits: float = 0.5) -> None:
        if free_bits < 0:
            raise ValueError(f"free bits must be >= 0, got {free_bits}")
        super().__init__()
        self.free_bits = free_bits

    def __repr__(self) -> str:
        return f"FreeBitsELBO(free_bits={self.free_bits:g})"

    def shape(self, kl: torch.Tensor) -> torch.Tensor:
        return kl.shape[0] * kl.mean(0).clamp(min=self.free_bits).sum()


class CapacityELBO(KLShapingELBO):
    """-R + N gamma |mean_n sum_j KL_nj - C|, C = ``capacity`` nats.

    Burgess et al. raise C linearly from 0 during training: the trainer does so with a
    :class:`~pyro_vae.inference.schedules.LinearRamp` that sets ``capacity`` before each step
    (``--capacity-epochs``)."""

    def __init__(self, capacity: float = 25.0, gamma: float = 100.0):
        if capacity < 0 or gamma <= 0:
            raise ValueError("capacity needs C >= 0 and gamma > 0")
        super().__init__()
        self.capacity = capacity
        self.gamma = gamma

    def __repr__(self) -> str:
        return f"CapacityELBO(capacity={self.capacity:g}, gamma={self.gamma:g})"

    def shape(self, kl: torch.Tensor) -> torch.Tensor:
        return kl.shape[0] * self.gamma * (kl.sum(1).mean() - self.capacity).abs()
