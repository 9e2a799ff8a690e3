"""Bidirectional Monte Carlo (BDMC): log p(x) sandwiched between two AIS bounds.

Grosse, Ghahramani & Adams (2015, "Sandwiching the marginal likelihood using bidirectional
Monte Carlo"): on data simulated from the model, (z, x) ~ p(z) p(x|z), the simulated z is an
exact sample from the posterior p(z|x). Forward AIS from q0 gives a stochastic lower bound on
log p(x); reverse AIS, started at that exact sample and annealed back to q0, gives an
estimate of 1/p(x), hence a stochastic upper bound:

    log mean_c w_c  <=  log p(x)  <=  -log mean_c exp(-log u_c)     (each in expectation).

The gap between the two bounds the error of either, for these simulated images; Wu, Burda,
Salakhutdinov & Grosse (2017, "On the quantitative analysis of decoder-based generative
models") use it to pick AIS settings for a decoder-based model (a gap well under a nat) before
trusting AIS on real data. The reverse runs replay the forward runs' step sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from pyro import poutine

from .. import param_store
from .ais import AISResult, ais_result, log_mean_exp, progress_bar
from .annealing import DEFAULTS, AnnealingSettings, Run, reverse
from .captured_transition import Transitions
from .traces import latent_sites

Latents = dict[str, torch.Tensor]


@torch.no_grad()
def simulate(model: Callable, n: int, like: torch.Tensor) -> tuple[Latents, torch.Tensor]:
    """n draws (z, x) ~ p(z) p(x|z) from ``model``: the latent values {site: (n, *event)} and
    the images (n, ...), x as the model gives it (binary for a Bernoulli likelihood).

    ``like`` is a batch of rows the model accepts (repeated to n rows): the model is run on
    them with its observed site resampled (``poutine.uncondition``). Where the observed value
    is narrower than a row (a conditional model's context follows the pixels) the row keeps
    its context and takes the simulated pixels first.
    """
    rows = like[torch.arange(n, device=like.device) % like.shape[0]]
    with param_store.off():
        trace = poutine.trace(poutine.uncondition(model)).get_trace(rows)
    observed = [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and site["infer"].get("was_observed", False)
    ]
    if len(observed) != 1:
        raise ValueError(f"simulate needs a model with one observed site, found {observed}")
    value = trace.nodes[observed[0]]["value"].detach()
    x = rows.clone()
    x[..., : value.shape[-1]] = value.reshape(x[..., : value.shape[-1]].shape)
    latent = [name for name in latent_sites(trace) if name not in observed]
    return {name: trace.nodes[name]["value"].detach() for name in latent}, x


@dataclass(frozen=True)
class BDMCResult:
    """Both bounds per image (nats, float64): ``forward`` is forward AIS (``lower``),
    ``upper`` = -log mean_c exp(-log u_c) from the reverse runs' ``reverse_log_weights``
    (C, N); ``reverse_acceptance`` their HMC acceptance rate per image."""

    forward: AISResult
    upper: torch.Tensor
    reverse_log_weights: torch.Tensor
    reverse_acceptance: torch.Tensor

    @property
    def lower(self) -> torch.Tensor:
        return self.forward.per_image

    @property
    def gap(self) -> torch.Tensor:
        """upper - lower per image: how far either bound may be from log p(x)."""
        return self.upper - self.lower

    @property
    def mean_lower(self) -> float:
        return float(self.lower.mean())

    @property
    def mean_upper(self) -> float:
        return float(self.upper.mean())

    @property
    def mean_gap(self) -> float:
        return float(self.gap.mean())


def _as_latents(z_exact: torch.Tensor | Latents, sites: list[str]) -> Latents:
    if isinstance(z_exact, dict):
        if set(z_exact) != set(sites):
            raise ValueError(f"z_exact has sites {sorted(z_exact)}, the model {sites}")
        return z_exact
    if len(sites) != 1:
        raise ValueError(f"the model has latent sites {sites}: give z_exact as a dict of them")
    return {sites[0]: z_exact}


@torch.no_grad()
def bdmc(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    z_exact: torch.Tensor | Latents,
    num_steps: int = DEFAULTS.num_steps,
    chains: int = DEFAULTS.chains,
    leapfrog_steps: int = DEFAULTS.leapfrog_steps,
    *,
    initial: str = DEFAULTS.initial,
    schedule: str = DEFAULTS.schedule,
    step_size: float = DEFAULTS.step_size,
    target_accept: float = DEFAULTS.target_accept,
    max_particles: int = DEFAULTS.max_particles,
    compile: bool | str | None = DEFAULTS.compile,
    progress: bool = False,
) -> BDMCResult:
    """Lower and upper bounds on log p(x) for images ``x`` simulated with latents ``z_exact``
    (a dict {site: (N, *event)}, or one tensor for a single-site model; see :func:`simulate`).

    Forward AIS as :func:`~pyro_vae.inference.ais.ais_log_likelihood` (same options, the
    fields of :class:`~pyro_vae.inference.annealing.AnnealingSettings`), then per chunk of
    images reverse AIS with every chain started at the image's ``z_exact`` and the forward
    run's step sizes (Grosse et al., 2015). Both directions share the transitions
    (``compile`` as for AIS).
    """
    settings = AnnealingSettings(
        num_steps,
        chains,
        leapfrog_steps,
        initial,
        schedule,
        step_size,
        target_accept,
        max_particles,
        compile,
    )
    transitions = Transitions.for_run(settings, x, runs_per_chunk=2)
    forwards: list[Run] = []
    reverses: list[Run] = []
    done: list[torch.Tensor] = []
    desc = f"BDMC log p(x), T={num_steps}, {chains} chains"
    shown, fields = progress_bar(settings, x, desc, 2, progress, label="gap")
    step = partial(shown.advance, 1, fields(done))  # fields(done) reads done as it grows
    for rows, densities in settings.chunks(model, guide, x):
        zb = {k: v[rows] for k, v in _as_latents(z_exact, densities.sites).items()}
        transition = transitions(densities)
        run = settings.forward_run(densities, transition, step)
        forwards.append(run)
        reverses.append(reverse(densities, settings.betas, zb, run.step_sizes, transition, step))
        done.append(-log_mean_exp(-reverses[-1].log_weights) - log_mean_exp(run.log_weights))
    shown.close(fields(done))
    log_u = torch.cat([r.log_weights for r in reverses], 1)
    return BDMCResult(
        ais_result(settings, forwards, transitions.mode),
        -log_mean_exp(-log_u),
        log_u,
        torch.cat([r.acceptance for r in reverses]),
    )
