"""The importance-weighted bound as a Pyro ELBO, with three gradient estimators.

For K particles z_1..z_K ~ q(z|x) per datapoint, the IWAE bound (Burda et al., 2016) is

    L_K(x) = log (1/K) sum_k w_k,    log w_k = log p(x, z_k) - log q(z_k | x),

with L_1 = ELBO <= L_K <= L_K' (K <= K') <= log p(x). Here it is per datapoint: every latent
site must live inside ``plate("data")``, and the particles are vectorised in an outer plate.
With beta-weighted latent sites (``poutine.scale``), log w_k carries the same weights as
Pyro's ELBOs: log p(x|z) + beta (log p(z) - log q(z|x)).

Gradients, with normalised weights w~_k = w_k / sum_j w_j:

- ``standard``: the reparameterised gradient of L_K, as ``RenyiELBO(alpha=0)``. Its encoder
  signal-to-noise ratio decays like 1/sqrt(K) (Rainforth et al., 2018).
- ``stl`` ("sticking the landing", Roeder et al., 2017): drop the score term of q, i.e.
  differentiate log q_phi(z) through z only. Unbiased for K = 1; for K > 1 it is *biased*
  (Tucker et al., 2019, sec. 3), though often useful.
- ``dreg`` (doubly reparameterised, Tucker et al., 2019): rewrite the score term with a second
  reparameterisation; unbiased, and its encoder SNR grows with K. The encoder gradient is
  sum_k w~_k c_k d(log w_k)/dz_k dz_k/dphi with c_k = w~_k at beta = 1; for a latent site
  weighted by beta it is c_k = 1 - beta + beta w~_k (the same identity applied to the
  beta-scaled score term), which reduces to the pathwise gradient at beta = 0.

Model (decoder, prior) parameters get sum_k w~_k d(log w_k)/d(theta) under every estimator.

Guides with several latent sites (a two-layer VAE: z1 ~ q(z1|x), z2 ~ q(z2|z1)): "log q
differentiated through z only" must keep how q(z2|z1) moves with z1 while holding the
parameters phi fixed, which no single site's density can do. Such guides are re-run with
their parameters held constant (``torch.func.functional_call``) and replayed at the sampled
values; DReG then feeds model and guide a copy z' = c z + (1 - c) sg(z) of each sample, whose
value is z and whose gradient is scaled by c exactly once per path. This needs the guide to be
a method of the ``nn.Module`` that owns its parameters (as ``VAE.guide`` is).

Groups (MIWAE, Rainforth et al., 2018): with ``groups`` = M the M K particles form M groups of
K, and the bound is the average of M independent IWAE_K bounds,
(1/M) sum_m log (1/K) sum_k w_{m,k}. Each group is an IWAE bound of its own, so the weights
w~ above (and the DReG factors c) are normalised within a group, and the gradient of each
group's bound is taken by the chosen estimator. M = 1 is the IWAE bound itself.
:mod:`pyro_vae.inference.bounds` builds the rest of the family on this class.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer.enum import get_importance_trace
from pyro.poutine import Trace
from torch import nn

from .. import param_store
from .surrogate import SurrogateELBO
from .traces import latent_sites

IWAE_GRADIENTS = ("standard", "stl", "dreg")


class IWAE(SurrogateELBO):
    """Per-datapoint importance-weighted bound with ``standard``, ``stl`` or ``dreg`` gradients.

    Args:
        num_particles: K, samples per datapoint (vectorised), per group.
        grad: the gradient estimator.
        max_plate_nesting: plates in the model; the particle plate goes one further left.
        groups: M, groups of K particles whose IWAE_K bounds are averaged (1: plain IWAE).
            Pyro's ``num_particles`` attribute is the total, M K; ``group_size`` is K.
    """

    def __init__(
        self,
        num_particles: int = 5,
        grad: str = "standard",
        max_plate_nesting: int = 1,
        groups: int = 1,
    ):
        if grad not in IWAE_GRADIENTS:
            raise ValueError(
                f"unknown gradient estimator {grad!r}; choose one of: {', '.join(IWAE_GRADIENTS)}"
            )
        if num_particles < 1:
            raise ValueError(f"particles must be >= 1, got {num_particles}")
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        super().__init__(
            num_particles=groups * num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
        )
        self.grad = grad
        self.groups = groups
        self.group_size = num_particles

    def _particle_shape(self, model_trace: Trace) -> torch.Size:
        for site in model_trace.nodes.values():
            if site["type"] == "sample" and site["is_observed"]:
                return site["log_prob"].shape
        raise ValueError("IWAE needs an observed site in plate('data')")

    def scaled_log_weights(
        self, model_trace: Trace, guide_trace: Trace, stop_q_params: bool = False
    ) -> torch.Tensor:
        """log w with shape (M K, N) (just (N,) for one particle): one per particle and datapoint,
        each site's log-density weighted by its scale (beta) and mask, as Pyro's ELBOs do.

        With ``stop_q_params`` each log q(z) is differentiated through z only:
        log q_phi(z) - log q_phi(sg z) + sg(log q_phi(sg z)) has the value of log q(z) and,
        as gradient, the total derivative minus the direct one in phi.
        """
        shape = self._particle_shape(model_trace)
        log_w: torch.Tensor | float = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] == "sample":
                log_w = log_w + self._per_datapoint(name, site["log_prob"], shape)
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            log_q = site["log_prob"]
            if stop_q_params:
                fn, z = site["fn"], site["value"]
                at_fixed = fn.log_prob(z.detach())
                log_q = scale_and_mask(
                    fn.log_prob(z) - at_fixed + at_fixed.detach(), site["scale"], site["mask"]
                )
            log_w = log_w - self._per_datapoint(name, log_q, shape)
        return log_w  # a tensor: the observed site always contributes

    @staticmethod
    def _per_datapoint(name: str, log_prob: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        if not torch.is_tensor(log_prob):  # a masked site contributes a plain 0
            return log_prob
        if log_prob.shape != shape:
            if log_prob.dim() == len(shape) and log_prob.shape[-1] == 1:
                raise ValueError(
                    f"site {name!r} is not inside plate('data'): the per-datapoint IWAE bound "
                    "needs every latent variable to be local to a datapoint"
                )
            log_prob = log_prob.expand(shape)
        return log_prob

    def _as_particles(self, log_w: torch.Tensor) -> torch.Tensor:
        """log w with its particle dimension, (M K, N): Pyro adds no particle plate for a
        single particle."""
        return log_w.unsqueeze(0) if self.num_particles == 1 else log_w

    def _grouped(self, log_w: torch.Tensor) -> torch.Tensor:
        """(M K, N) -> (M, K, N): group m holds particles m K, ..., m K + K - 1."""
        return log_w.reshape(self.groups, self.group_size, *log_w.shape[1:])

    def _bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """(1/M) sum_m log (1/K) sum_k w_{m,k} per datapoint, from log w of shape (M K, N)."""
        per_group = torch.logsumexp(self._grouped(log_w), dim=1) - math.log(self.group_size)
        return per_group.mean(0)

    def _normalised_weights(self, log_w: torch.Tensor) -> torch.Tensor:
        """w~_{m,k} = w_{m,k} / sum_j w_{m,j}, normalised within each group, shape (M K, N)."""
        return torch.softmax(self._grouped(log_w.detach()), dim=1).reshape(log_w.shape)

    def _attach_dreg_hooks(self, guide_trace: Trace, log_w: torch.Tensor) -> None:
        """Scale the gradient reaching each z_k by c_k = 1 - s + s w~_k (s: the site's scale)."""
        weights = self._normalised_weights(log_w)  # (M K, N)
        for site in guide_trace.nodes.values():
            if site["type"] != "sample" or site["is_observed"] or not site["value"].requires_grad:
                continue
            scale = site["scale"]
            if site["mask"] is False:
                scale = 0.0
            factor = 1.0 - scale + scale * weights
            factor = factor.reshape(site["fn"].batch_shape + (1,) * site["fn"].event_dim)
            site["value"].register_hook(lambda g, f=factor: g * f)

    def per_datapoint_bound(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """L_K(x) (with groups, the average of M of them) for each datapoint, shape (N,),
        differentiable by the chosen estimator."""
        ((model_trace, guide_trace),) = self._get_traces(model, guide, args, kwargs)
        if self.grad != "standard" and len(latent_sites(guide_trace)) > 1:
            return self._hierarchical_bound(model, guide, model_trace, guide_trace, args, kwargs)
        log_w = self._as_particles(
            self.scaled_log_weights(model_trace, guide_trace, stop_q_params=self.grad != "standard")
        )
        if self.grad == "dreg":
            self._attach_dreg_hooks(guide_trace, log_w)
        return self._bound(log_w)

    def _hierarchical_bound(self, model, guide, model_trace, guide_trace, args, kwargs):
        """STL/DReG for a guide with several latent sites (see the module doc)."""
        weights = self._normalised_weights(
            self._as_particles(self.scaled_log_weights(model_trace, guide_trace))
        )  # (M K, N)
        replayed = guide_trace.copy()
        for name in latent_sites(guide_trace):
            site = replayed.nodes[name] = dict(guide_trace.nodes[name])
            z = site["value"]
            if self.grad == "dreg":
                scale = 0.0 if site["mask"] is False else site["scale"]
                c = 1.0 - scale + scale * weights
                c = c.reshape(site["fn"].batch_shape + (1,) * site["fn"].event_dim)
                site["value"] = c * z + (1 - c) * z.detach()
        stopped = poutine.replay(
            self._vectorized_num_particles(_with_constant_parameters(guide)), trace=replayed
        )
        model_trace, stopped_trace = get_importance_trace(
            "flat",
            self.max_plate_nesting,
            self._vectorized_num_particles(model),
            stopped,
            args,
            kwargs,
        )
        return self._bound(self._as_particles(self.scaled_log_weights(model_trace, stopped_trace)))

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """-sum_n of the per-datapoint bound; its gradient is the chosen estimator's."""
        return -self.per_datapoint_bound(model, guide, *args, **kwargs).sum()


class _MethodCall(nn.Module):
    """Calls ``method`` of ``owner`` as its forward, so ``functional_call`` can swap the
    owner's parameters for constants."""

    def __init__(self, owner: nn.Module, method: Callable) -> None:
        super().__init__()
        self.owner = owner
        self.method = method

    def forward(self, *args, **kwargs):
        return self.method(self.owner, *args, **kwargs)


def _with_constant_parameters(guide: Callable) -> Callable:
    """``guide`` run with its module's parameters detached: log q at fixed phi."""
    owner = getattr(guide, "__self__", None)
    if not isinstance(owner, nn.Module):
        raise ValueError(
            "IWAE with stl or dreg gradients and several latent sites needs the guide to be a "
            "method of the nn.Module that owns its parameters (e.g. vae.guide)"
        )
    call = _MethodCall(owner, guide.__func__)

    def stopped(*args, **kwargs):
        constants = {f"owner.{n}": p.detach() for n, p in owner.named_parameters()}
        with param_store.off():  # constants are not parameters for Pyro's param store
            return torch.func.functional_call(call, constants, args, kwargs)

    return stopped
