"""log p(x, z) and log q0(z) of a model/guide pair at given latent values, for MCMC on z.

For latent values z = {site: tensor of shape (C, N, *event)} (C chains for each of N images)

    log p(x, z)   every sample site of the model, its latent sites conditioned on z,
    log q0(z)     q(z | x), every site of the guide conditioned on z (``initial="guide"``),
                  or p(z), the model's latent sites alone (``initial="prior"``),

each of shape (C, N), and their gradients with respect to z (``torch.autograd.grad`` with z as
the only inputs, so the model's parameters get no ``.grad``). The programs run inside an outer
plate of C chains at dim -2, left of plate("data"), with ``poutine.condition`` putting z at
the latent sites. The log-densities are plain and unscaled (no KL weight, no mask), as in
:func:`~pyro_vae.inference.log_likelihood.importance_log_weights`.

MCMC moves z over all of R^d, so every latent site must be continuous with support the reals,
have a density (not a point mass) and one value per image: a site that is not is refused with
a ValueError saying which and why. A flow guide (``iaf``) is fine: Pyro evaluates q(z|x) at
any z through the flow's inverse (one pass per latent dimension, so slowly).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch.distributions import constraints

from .. import param_store
from .traces import is_sample, latent_sites, plain_log_density

Latents = dict[str, torch.Tensor]
CHAINS = "annealing_chains"
INITIAL = ("guide", "prior")


def with_chains(fn: Callable, chains: int) -> Callable:
    """``fn`` run inside an outer plate of ``chains`` (dim -2, left of plate 'data')."""

    def wrapped(*args, **kwargs):
        with pyro.plate(CHAINS, chains, dim=-2):
            return fn(*args, **kwargs)

    return wrapped


@dataclass(frozen=True)
class Densities:
    """log p(x, z), log q0(z) (each (C, N)) at z and their gradients (each like z)."""

    log_p: torch.Tensor
    log_q0: torch.Tensor
    grad_p: Latents
    grad_q0: Latents


def _base(fn: dist.Distribution) -> dist.Distribution:
    """The distribution under Independent / Expanded / Masked wrappers."""
    while hasattr(fn, "base_dist") and not isinstance(fn, dist.TransformedDistribution):
        fn = fn.base_dist
    return fn


def _why_not(site: dict, num_images: int) -> str | None:
    """Why MCMC on this latent site would be wrong, or None when it is fine."""
    fn = site["fn"]
    support = fn.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if support.is_discrete or getattr(fn, "has_enumerate_support", False):
        return "it is discrete; annealing with HMC needs continuous latents"
    if isinstance(_base(fn), dist.Delta):
        return "it is a point mass (Delta), which has no density to anneal"
    if type(support) is not type(constraints.real):
        return f"its support is {support}, not the reals (HMC moves z over all of R^d)"
    if tuple(fn.batch_shape) != (num_images,):
        return (
            f"its log-density has batch shape {tuple(fn.batch_shape)}, not ({num_images},): "
            "one value per image, in plate('data') at dim -1 (use .to_event for the rest)"
        )
    return None


@torch.no_grad()
def check_latent_sites(
    model: Callable, guide: Callable, x: torch.Tensor, initial: str = "guide"
) -> list[str]:
    """The latent sites of ``model`` (in its order), after refusing with a ValueError a pair
    that annealing cannot handle: no latent site, a discrete or constrained or point-mass site
    (in the model or the guide), a site not one per image in plate('data'), or (with
    ``initial="guide"``) a guide whose latent sites are not the model's."""
    if initial not in INITIAL:
        raise ValueError(f"initial must be one of {INITIAL}, got {initial!r}")
    with param_store.off():
        model_trace = poutine.trace(model).get_trace(x)
        traces = {"model": model_trace}
        if initial == "guide":
            traces["guide"] = poutine.trace(guide).get_trace(x)
    sites = {who: latent_sites(trace) for who, trace in traces.items()}
    if not sites["model"]:
        raise ValueError("the model has no latent sample site: there is nothing to anneal over")
    if initial == "guide" and set(sites["guide"]) != set(sites["model"]):
        raise ValueError(
            f"the guide's latent sites {sites['guide']} are not the model's {sites['model']}"
        )
    for who, trace in traces.items():
        for name in sites[who]:
            why = _why_not(trace.nodes[name], x.shape[0])
            if why:
                raise ValueError(f"cannot anneal over the {who}'s latent site {name!r}: {why}")
    return sites["model"]


def _summed(trace: poutine.Trace, names: set[str] | None, shape: tuple[int, int]) -> torch.Tensor:
    """The sum of the plain log-densities of the trace's sample sites (those in ``names``, or
    all), broadcast to (C, N)."""
    total = torch.zeros(())
    for name, site in trace.nodes.items():
        if is_sample(site) and (names is None or name in names):
            total = total + plain_log_density(site)
    return torch.broadcast_to(total, shape)


class LatentDensities:
    """log p(x, z) and log q0(z) for the images ``x`` (N, ...) and ``chains`` chains each.

    ``initial`` chooses q0: the guide's q(z|x) or the model's prior p(z). The pair is checked
    (:func:`check_latent_sites`) when this is made.
    """

    def __init__(
        self, model: Callable, guide: Callable, x: torch.Tensor, chains: int, initial: str = "guide"
    ) -> None:
        self.sites = check_latent_sites(model, guide, x, initial)
        self.model, self.guide, self.x = model, guide, x
        self.chains, self.initial = chains, initial
        self.shape = (chains, x.shape[0])

    @torch.no_grad()
    def sample_initial(self) -> Latents:
        """z ~ q0, each site shaped (C, N, *event)."""
        fn = self.guide if self.initial == "guide" else self.model
        with param_store.off():
            trace = poutine.trace(with_chains(fn, self.chains)).get_trace(self.x)
        return {name: trace.nodes[name]["value"].detach() for name in self.sites}

    def log_densities(
        self, z: Latents, x: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x, z), log q0(z)) at ``z``, each (C, N), in the current grad mode; ``x``:
        other images of the same shape than those this was made for.

        Without validation: a leapfrog that diverged may give NaN parameters, which must
        come out as a NaN density (a rejected proposal), not as an error."""
        x = self.x if x is None else x
        with param_store.off(), pyro.validation_enabled(False):
            model = poutine.condition(with_chains(self.model, self.chains), data=z)
            model_trace = poutine.trace(model).get_trace(x)
            log_p = _summed(model_trace, None, self.shape)
            if self.initial == "prior":
                return log_p, _summed(model_trace, set(z), self.shape)
            guide = poutine.condition(with_chains(self.guide, self.chains), data=z)
            guide_trace = poutine.trace(guide).get_trace(x)
            return log_p, _summed(guide_trace, set(z), self.shape)

    def evaluate(self, z: Latents, x: torch.Tensor | None = None) -> Densities:
        """Both log-densities at ``z`` and their gradients with respect to z only (``x``: as
        for :meth:`log_densities`)."""
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_(True) for k, v in z.items()}
            log_p, log_q0 = self.log_densities(leaves, x)
            inputs = list(leaves.values())
            grad_p = _grad(log_p, inputs, retain_graph=True)
            grad_q0 = _grad(log_q0, inputs, retain_graph=False)
        names = list(leaves)
        return Densities(
            log_p.detach(),
            log_q0.detach(),
            dict(zip(names, grad_p, strict=True)),
            dict(zip(names, grad_q0, strict=True)),
        )


def _grad(
    output: torch.Tensor, inputs: list[torch.Tensor], retain_graph: bool
) -> list[torch.Tensor]:
    """d output.sum() / d inputs (zeros for an input it does not depend on)."""
    if not output.requires_grad:
        return [torch.zeros_like(v) for v in inputs]
    grads = torch.autograd.grad(output.sum(), inputs, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(v) if g is None else g for v, g in zip(inputs, grads, strict=True)]
