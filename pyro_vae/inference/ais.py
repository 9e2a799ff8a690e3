"""log p(x) per image by annealed importance sampling (AIS) with HMC transitions.

For each image, C chains anneal from q0(z) (the guide q(z|x) by default, or the prior p(z))
to the posterior p(z|x) along f_t = q0^(1 - b_t) p(x, z)^b_t (Neal, 2001, "Annealed
importance sampling"; the run itself is :func:`pyro_vae.inference.annealing.forward`), each
chain carrying a log weight log w_c with E[w_c] = p(x), and

    log p(x) ~= log (1/C) sum_c w_c,

a stochastic lower bound on log p(x) which tightens as the number of steps T grows, where
importance sampling (T = 1 here) needs exponentially many samples once q0 is far from the
posterior (Wu, Burda, Salakhutdinov & Grosse, 2017, "On the quantitative analysis of
decoder-based generative models"). The transitions are HMC (Neal, 2011) with ``leapfrog_steps``
leapfrog steps and one step size per image, adapted towards ``target_accept`` (Wu et al.'s
rule, which makes the bound hold only approximately: see :mod:`.annealing`).

Any Pyro model/guide pair whose latent sites are continuous over the reals and live one per
image in plate("data") works, as for :func:`~pyro_vae.inference.log_likelihood.log_likelihood`;
the images are processed in chunks of at most ``max_particles`` chains x images, and the
model's parameters are constants (they get no ``.grad``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..progress import Progress
from .annealing import DEFAULTS, AnnealingSettings, Run
from .captured_transition import Transitions


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/C) sum_c exp(log_w_c) along ``dim``."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """(sum_c w_c)^2 / sum_c w_c^2 per image from log weights (C, N): between 1 (one chain
    carries all the weight) and C (all weights equal)."""
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))


@dataclass(frozen=True)
class AISResult:
    """AIS log p(x) per image (nats, float64) and how the runs went.

    ``log_weights`` (C, N): each chain's log w; ``per_image`` = log mean_c w_c; ``ess`` the
    chains' effective sample size per image; ``acceptance`` each image's HMC acceptance rate
    over its chains and transitions (NaN for T = 1: none are made); ``step_sizes`` (T, N) the
    HMC step size of each image for the transitions K_1..K_T (see
    :class:`~pyro_vae.inference.annealing.Run`); ``transitions`` how they ran ("pyro",
    "graph" or "inductor": :class:`~.captured_transition.Transitions`).
    """

    per_image: torch.Tensor
    log_weights: torch.Tensor
    ess: torch.Tensor
    acceptance: torch.Tensor
    step_sizes: torch.Tensor
    num_steps: int
    chains: int
    leapfrog_steps: int
    initial: str
    schedule: str
    transitions: str

    @property
    def mean(self) -> float:
        """The mean over images of log p(x), in nats."""
        return float(self.per_image.mean())


def ais_result(settings: AnnealingSettings, runs: list[Run], transitions: str) -> AISResult:
    """The forward runs of all chunks as one result, their transitions run as
    ``transitions`` says."""
    log_w = torch.cat([r.log_weights for r in runs], 1)
    return AISResult(
        log_mean_exp(log_w),
        log_w,
        effective_sample_size(log_w),
        torch.cat([r.acceptance for r in runs]),
        torch.cat([r.step_sizes for r in runs], 1),
        settings.num_steps,
        settings.chains,
        settings.leapfrog_steps,
        settings.initial,
        settings.schedule,
        transitions,
    )


def progress_bar(
    settings: AnnealingSettings,
    x: torch.Tensor,
    desc: str,
    runs_per_chunk: int,
    enabled: bool,
    label: str = "mean",
) -> tuple[Progress, Callable[[list[torch.Tensor]], Callable[[], str]]]:
    """A bar counting annealing steps over all chunks, and a maker of its fields: images
    done, the running mean (``label``) of the per-image values so far, images per second."""
    total = settings.num_steps * settings.num_chunks(x) * runs_per_chunk
    shown = Progress(total, desc, "step", enabled=enabled)

    def fields(done: list[torch.Tensor]) -> Callable[[], str]:
        def text() -> str:
            if not done:
                return f"0/{x.shape[0]} images"
            n = sum(len(d) for d in done)
            mean = float(torch.cat(done).mean())
            rate = n / shown.elapsed
            return f"{n}/{x.shape[0]} images, {label} {mean:.2f} nats, {rate:.2f} images/s"

        return text

    return shown, fields


@torch.no_grad()
def ais_log_likelihood(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
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
) -> AISResult:
    """log p(x) per image by AIS: ``chains`` chains per image, ``num_steps`` annealing steps T
    from q0 (``initial``: "guide" for q(z|x), "prior" for p(z)) to the posterior, each step an
    HMC transition of ``leapfrog_steps`` leapfrog steps (Neal, 2001; Wu et al., 2017). The
    options are the fields of :class:`~pyro_vae.inference.annealing.AnnealingSettings`
    (``**settings.run_options()`` passes one), with its defaults.

    ``schedule``: "sigmoid" (Grosse et al., 2015) or "linear" betas. ``step_size``: every
    image's initial HMC step size, adapted towards the acceptance rate ``target_accept``.
    At most ``max_particles`` chains x images are evaluated at once (memory: decoder outputs
    and their gradients for that many codes). A model/guide pair with a discrete,
    constrained, point-mass or non-per-image latent site is refused with a ValueError.
    ``compile``: how the HMC transitions run (:class:`~.captured_transition.Transitions`):
    True, captured once as a graph and compiled; False, through Pyro; None, compiled where
    the run is long enough to repay the compilation.

    The defaults cost about T L C = 8000 decoder passes (with gradients) per image. Measured
    on a VAE trained 3 epochs on mnist-sample and on the linear-Gaussian test model, short
    trajectories (L = 2) with more steps beat L = 10 at equal cost, and an initial step of
    0.05 beat Wu et al.'s 0.01, which adaptation needs a few hundred steps to grow out of.
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
    transitions = Transitions.for_run(settings, x)
    runs: list[Run] = []
    done: list[torch.Tensor] = []
    desc = f"AIS log p(x), T={num_steps}, {chains} chains"
    shown, fields = progress_bar(settings, x, desc, 1, progress)
    for _, densities in settings.chunks(model, guide, x):
        step = transitions(densities)
        runs.append(settings.forward_run(densities, step, lambda: shown.advance(1, fields(done))))
        done.append(log_mean_exp(runs[-1].log_weights))
    shown.close(fields(done))
    return ais_result(settings, runs, transitions.mode)
