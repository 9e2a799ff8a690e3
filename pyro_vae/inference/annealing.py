"""Annealed importance sampling runs over a path of densities, forward and reverse.

The path from q0(z) (the guide q(z|x), or the prior p(z)) to the posterior p(z|x):

    f_t(z) = q0(z)^(1 - b_t) p(x, z)^b_t,    0 = b_0 < b_1 < ... < b_T = 1,

so log f_t = log q0 + b_t h with h(z) = log p(x, z) - log q0(z). Forward AIS (Neal, 2001,
"Annealed importance sampling") draws z_0 ~ q0 and, for t = 1..T,

    log w += (b_t - b_{t-1}) h(z_{t-1}),    z_t ~ K_t(z_{t-1}, .), an HMC transition leaving f_t
                                            invariant,

and E[w] = Z_T / Z_0 = p(x): log mean_c w_c is a stochastic lower bound on log p(x) (Jensen).
The transition K_T is not made: z_T would enter no weight. With T = 1 AIS is importance
sampling with q0 as proposal.

Reverse AIS (Grosse, Ghahramani & Adams, 2015, "Sandwiching the marginal likelihood using
bidirectional Monte Carlo", sec. 4) runs the same chain backwards from an exact posterior
sample z_T ~ p(z|x): for t = T..1, z_{t-1} ~ K_t(z_t, .) (none for t = T, where z_T is already
distributed as f_T), then log u += (b_t - b_{t-1}) h(z_{t-1}). Now E[1/u] = Z_0 / Z_T = 1/p(x),
so -log mean_c exp(-log u_c) is a stochastic upper bound on log p(x).

Step sizes: the forward run adapts each image's step size from its chains' acceptance rate
after every transition, as Wu, Burda, Salakhutdinov & Grosse (2017, "On the quantitative
analysis of decoder-based generative models") do. The transitions then depend on the chains'
own past, so in theory the estimate is no longer exactly a stochastic lower bound (the bias
is small in practice, and is what their evaluations accept). The reverse run replays the
forward run's recorded step sizes and adapts nothing.

The schedule is sigmoidal by default: b_t proportional to sigmoid(delta (2t/T - 1)), rescaled
to [0, 1], delta = 4 (Grosse et al.'s BDMC code), which spends more steps near both ends.

The settings of a run (T, chains, leapfrog steps, q0, schedule, step size, memory) are one
:class:`AnnealingSettings`, read by AIS (:mod:`.ais`), BDMC (:mod:`.bdmc`) and ``pyro-vae
evaluate``; it also runs forward AIS over the images chunk by chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

import torch

from .hmc import Latents, Point, adapt_step_size, hmc_transition, with_density
from .latent_densities import INITIAL, Densities, LatentDensities

SCHEDULES = ("sigmoid", "linear")


def sigmoid_schedule(num_steps: int, delta: float = 4.0) -> torch.Tensor:
    """b_0..b_T (float64): sigmoid(delta (2t/T - 1)) rescaled so that b_0 = 0 and b_T = 1."""
    if num_steps == 1:
        return torch.tensor([0.0, 1.0], dtype=torch.float64)
    t = torch.linspace(-delta, delta, num_steps + 1, dtype=torch.float64)
    s = torch.sigmoid(t)
    betas = (s - s[0]) / (s[-1] - s[0])
    betas[0], betas[-1] = 0.0, 1.0
    return betas


def schedule(name: str, num_steps: int) -> torch.Tensor:
    """The ``name``d schedule ("sigmoid" or "linear") of ``num_steps`` steps: T + 1 betas."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if name == "sigmoid":
        return sigmoid_schedule(num_steps)
    if name == "linear":
        return torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")


def annealed_point(d: Densities, z: Latents, beta: float) -> Point:
    """The point z under log f_b = (1 - b) log q0 + b log p(x, z); ``extra`` keeps both parts,
    so that the same point is re-read under another b without calling the model."""
    extra = {"log_p": d.log_p, "log_q0": d.log_q0, "grad_p": d.grad_p, "grad_q0": d.grad_q0}
    return at_beta(Point(z, d.log_q0, d.grad_q0, extra), beta)


def at_beta(point: Point, beta: float) -> Point:
    """``point`` under f_b (its log-densities and gradients are kept in ``extra``)."""
    e = point.extra
    log_f = (1 - beta) * e["log_q0"] + beta * e["log_p"]
    grad = {k: (1 - beta) * e["grad_q0"][k] + beta * e["grad_p"][k] for k in point.z}
    return with_density(point, log_f, grad)


def log_ratio(point: Point) -> torch.Tensor:
    """h(z) = log p(x, z) - log q0(z) at the point, (C, N), in float64."""
    return (point.extra["log_p"] - point.extra["log_q0"]).double()


Transition = Callable[[Point, float, torch.Tensor], tuple[Point, torch.Tensor]]
"""``transition(point, b, step_size) -> (point, accept)``: an HMC transition leaving f_b
invariant, from ``point`` (read under f_b whatever density it was last read under)."""


def eager_transition(densities: LatentDensities, leapfrog_steps: int) -> Transition:
    """The HMC transition of ``densities``' chains, each evaluation a run of the model and the
    guide through Pyro (:meth:`LatentDensities.evaluate`)."""

    def transition(point: Point, beta: float, step_size: torch.Tensor):
        def target(z: Latents) -> Point:
            return annealed_point(densities.evaluate(z), z, beta)

        return hmc_transition(at_beta(point, beta), target, step_size, leapfrog_steps)

    return transition


@dataclass(frozen=True)
class Run:
    """One annealing run over a chunk of images: the log weights (C, N) in float64 (log w
    forward, log u in reverse), the step sizes (T, N) of the transitions K_1..K_T (the last
    row, for K_T, is where adaptation ended: no run makes K_T), and each image's acceptance
    rate (N,) over its chains and transitions (NaN when T = 1: there are none)."""

    log_weights: torch.Tensor
    step_sizes: torch.Tensor
    acceptance: torch.Tensor


def _acceptance(accepted: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    if not accepted:
        return torch.full(like.shape[1:], math.nan, dtype=torch.float64, device=like.device)
    return torch.stack(accepted).mean(0).double()


def forward(
    densities: LatentDensities,
    betas: torch.Tensor,
    step_size: torch.Tensor,
    transition: Transition,
    target_accept: float,
    on_step: Callable[[], None] = lambda: None,
) -> Run:
    """Forward AIS from z_0 ~ q0, adapting each image's step size (N,) after each
    ``transition`` (of ``densities``' chains) towards ``target_accept``. ``on_step`` is
    called after each annealing step."""
    z = densities.sample_initial()
    point = annealed_point(densities.evaluate(z), z, 0.0)
    num_steps = len(betas) - 1
    log_w = torch.zeros(densities.shape, dtype=torch.float64, device=step_size.device)
    step_sizes = step_size.new_empty(num_steps, step_size.shape[0])
    accepted = []
    for t in range(1, num_steps + 1):
        log_w += float(betas[t] - betas[t - 1]) * log_ratio(point)
        step_sizes[t - 1] = step_size
        if t < num_steps:
            point, accept = transition(point, float(betas[t]), step_size)
            rate = accept.double().mean(0)
            accepted.append(rate)
            step_size = adapt_step_size(step_size, rate, target_accept)
        on_step()
    return Run(log_w, step_sizes, _acceptance(accepted, log_w))


def reverse(
    densities: LatentDensities,
    betas: torch.Tensor,
    z_exact: Latents,
    step_sizes: torch.Tensor,
    transition: Transition,
    on_step: Callable[[], None] = lambda: None,
) -> Run:
    """Reverse AIS from the exact posterior samples ``z_exact`` (each site (N, *event); every
    chain of an image starts at its sample), with the forward run's ``step_sizes`` and
    ``transition`` (of ``densities``' chains)."""
    z = _with_chains(z_exact, densities.chains)
    point = annealed_point(densities.evaluate(z), z, 1.0)
    num_steps = len(betas) - 1
    log_u = torch.zeros(densities.shape, dtype=torch.float64, device=step_sizes.device)
    accepted = []
    for t in range(num_steps, 0, -1):
        if t < num_steps:
            point, accept = transition(point, float(betas[t]), step_sizes[t - 1])
            accepted.append(accept.double().mean(0))
        log_u += float(betas[t] - betas[t - 1]) * log_ratio(point)
        on_step()
    return Run(log_u, step_sizes, _acceptance(accepted, log_u))


def _with_chains(z: Latents, chains: int) -> Latents:
    """Each site's values (N, *event) repeated for ``chains`` chains: (C, N, *event)."""
    return {k: v.unsqueeze(0).expand(chains, *v.shape).contiguous() for k, v in z.items()}


@dataclass(frozen=True)
class AnnealingSettings:
    """The settings of an AIS or BDMC run, checked once.

    Attributes:
        num_steps: T, the annealing steps (intermediate distributions).
        chains: C, chains per image.
        leapfrog_steps: L, leapfrog steps per HMC transition.
        initial: where the chains start, q0: ``guide`` (q(z|x)) or ``prior`` (p(z)).
        schedule: the betas, ``sigmoid`` or ``linear``.
        step_size: every image's initial HMC step size, adapted towards ``target_accept``.
        target_accept: the acceptance rate the step sizes are adapted towards, in (0, 1).
        max_particles: at most this many chains x images are evaluated at once (memory).
        compile: how the HMC transitions run: True (captured as one graph and compiled),
            False (through Pyro), None (compiled when the run is long enough), or a mode of
            :class:`~pyro_vae.inference.captured_transition.Transitions`.
        simulated: for BDMC in ``pyro-vae evaluate``, the images simulated from the model
            (:func:`~pyro_vae.inference.bdmc.bdmc` itself takes the images it is given).
    """

    num_steps: int = 500
    chains: int = 8
    leapfrog_steps: int = 2
    initial: str = "guide"
    schedule: str = "sigmoid"
    step_size: float = 0.05
    target_accept: float = 0.65
    max_particles: int = 10_000
    compile: bool | str | None = None
    simulated: int = 100

    def __post_init__(self) -> None:
        for name in ("num_steps", "chains", "leapfrog_steps", "max_particles", "simulated"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.initial not in INITIAL:
            raise ValueError(f"initial must be one of {INITIAL}, got {self.initial!r}")
        if not self.step_size > 0:
            raise ValueError(f"step_size must be > 0, got {self.step_size}")
        if not 0 < self.target_accept < 1:
            raise ValueError(f"target_accept must be in (0, 1), got {self.target_accept}")
        schedule(self.schedule, 1)  # a known name

    @cached_property
    def betas(self) -> torch.Tensor:
        """b_0..b_T of the schedule."""
        return schedule(self.schedule, self.num_steps)

    def _chunk_size(self) -> int:
        return max(1, self.max_particles // self.chains)

    def num_chunks(self, x: torch.Tensor) -> int:
        return -(-x.shape[0] // self._chunk_size())

    def chunks(
        self, model: Callable, guide: Callable, x: torch.Tensor
    ) -> Iterator[tuple[slice, LatentDensities]]:
        """The images ``x`` in chunks of at most ``max_particles`` chains x images: each
        chunk's rows of ``x`` and the densities of its chains (the pair checked on each)."""
        size = self._chunk_size()
        for start in range(0, x.shape[0], size):
            rows = slice(start, start + size)
            yield rows, LatentDensities(model, guide, x[rows], self.chains, self.initial)

    def forward_run(
        self, densities: LatentDensities, transition: Transition, on_step: Callable[[], None]
    ) -> Run:
        """Forward AIS (:func:`forward`) over one chunk, every image from ``step_size``."""
        x = densities.x
        start = torch.full((x.shape[0],), self.step_size, dtype=torch.float64, device=x.device)
        return forward(densities, self.betas, start, transition, self.target_accept, on_step)

    def run_options(self) -> dict[str, object]:
        """The keyword arguments of :func:`~pyro_vae.inference.ais.ais_log_likelihood` and
        :func:`~pyro_vae.inference.bdmc.bdmc`: every setting but ``simulated``."""
        return {
            name: getattr(self, name) for name in self.__dataclass_fields__ if name != "simulated"
        }


DEFAULTS = AnnealingSettings()
