"""The HMC transition of an annealing run, captured once as an ATen graph and compiled.

One transition of AIS or BDMC (:mod:`.annealing`) evaluates log p(x, z), log q0(z) and their
gradients ``leapfrog_steps`` times. Run through Pyro, each evaluation traces the model and the
guide again (effect handlers, distribution objects, plates: Python work that issues the same
tensor operations every time), and that work, not the arithmetic, was most of an AIS run's
time. Here the whole transition, from the momentum draw to the Metropolis test, is recorded
once per chunk shape with ``make_fx`` (:func:`~.graph_compiler.capture`: the model and the
guide conditioned on z, their densities, the backward passes of ``torch.autograd.grad`` with
respect to z, the leapfrog steps) and compiled by TorchInductor, which fuses the element-wise
work around the matrix products. The graph's inputs are the modules' parameters, the images,
the state (z, log p(x, z), log q0(z) and both gradients), b_t and the step sizes, so one graph
serves every annealing step and every chunk of that shape.

The random draws (the momenta, the uniforms of the Metropolis test) are made by the eager
kernels in the eager order (Inductor's ``fallback_random``), so for the same seed the captured
transition moves the chains as the eager one does: the estimates agree to float32 rounding.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable

import torch

from .annealing import AnnealingSettings, Transition, annealed_point, at_beta, eager_transition
from .graph_compiler import CaptureError, Parameters, capture, compile_graph, owning_modules
from .hmc import Latents, Point, hmc_transition
from .latent_densities import LatentDensities

_PARTS = ("log_p", "log_q0", "grad_p", "grad_q0")


def _flat(point: Point, sites: list[str]) -> list[torch.Tensor]:
    """The state the transition needs: z, log p, log q0, grad p, grad q0 (sites in order)."""
    e = point.extra
    return [
        *(point.z[k] for k in sites),
        e["log_p"],
        e["log_q0"],
        *(e["grad_p"][k] for k in sites),
        *(e["grad_q0"][k] for k in sites),
    ]


def _unflat(state: list[torch.Tensor], sites: list[str]) -> tuple[Latents, dict]:
    n = len(sites)
    z = dict(zip(sites, state[:n], strict=True))
    grad_p = dict(zip(sites, state[n + 2 : 2 * n + 2], strict=True))
    grad_q0 = dict(zip(sites, state[2 * n + 2 :], strict=True))
    return z, dict(zip(_PARTS, (state[n], state[n + 1], grad_p, grad_q0), strict=True))


class CapturedTransition:
    """``transition(point, beta, step_size) -> (point, accept)``: the HMC transition leaving
    f_b = q0^(1 - b) p(x, z)^b invariant for the chains of ``densities``' images, as
    :func:`~.annealing.eager_transition` makes it, run as one compiled graph.

    ``backend``: ``"inductor"`` (fused kernels; the first call for a shape compiles, tens of
    seconds on a small CPU) or ``"eager"`` (the recorded graph as it is: no Pyro per call, no
    compile). One graph is built per (images, chains) shape and kept, so the chunks of a run
    share it; :meth:`rebind` points the transition at the next chunk's images.
    """

    def __init__(
        self, densities: LatentDensities, leapfrog_steps: int, backend: str = "inductor"
    ) -> None:
        self.densities = densities
        self.leapfrog_steps = leapfrog_steps
        self.backend = backend
        self.parameters = Parameters(owning_modules(densities.model, densities.guide))
        self._graphs: dict[tuple, Callable] = {}

    def rebind(self, densities: LatentDensities) -> CapturedTransition:
        """This transition (and its compiled graphs) for another chunk's ``densities``."""
        self.densities = densities
        return self

    def _record(self, args: tuple) -> Callable:
        densities, sites, steps = self.densities, self.densities.sites, self.leapfrog_steps

        def transition(params, x, state, beta, step_size):
            with self.parameters.substituted(params):
                point = _point(state, sites, beta)

                def target(z: Latents) -> Point:
                    return annealed_point(densities.evaluate(z, x), z, beta)

                moved, accept = hmc_transition(point, target, step_size, steps)
            return _flat(moved, sites), accept

        return compile_graph(capture(transition, *args), self.backend, fastest_matmul=True)

    def __call__(
        self, point: Point, beta: float, step_size: torch.Tensor
    ) -> tuple[Point, torch.Tensor]:
        x, sites = self.densities.x, self.densities.sites
        state = _flat(point, sites)
        params = [p.detach() for p in self.parameters.current()]
        beta_t = torch.tensor(beta, dtype=torch.float64, device=x.device)
        args = (params, x, state, beta_t, step_size)
        key = (tuple(x.shape), x.dtype, x.device, tuple(tuple(s.shape) for s in state))
        if key not in self._graphs:
            self._graphs[key] = self._record(args)
        new_state, accept = self._graphs[key](*args)
        return _point(list(new_state), sites, beta), accept


def _point(state: list[torch.Tensor], sites: list[str], beta: float | torch.Tensor) -> Point:
    """The flat state as a point read under f_b."""
    z, extra = _unflat(state, sites)
    return at_beta(Point(z, extra["log_q0"], extra["grad_q0"], extra), beta)


COMPILE_MODES = ("inductor", "graph", "pyro")
# When ``compile=None`` captures and compiles (:meth:`Transitions.for_run`). Measured on a
# 2-core EPYC with the default run's VAE, 20 images x 8 chains: capturing took 0.5 s and saved
# 1.6 ms per evaluation against Pyro; compiling took 4-7 s and saved 1.7 ms more per evaluation
# of those 160 rows (docs/speed.md, "AIS"); the saving grows with the rows of a chunk.
CAPTURE_FROM = 300  # model evaluations: annealing steps x leapfrog steps x runs x chunks
COMPILE_FROM = 1_000_000  # evaluations x rows (chains x images) of a chunk


class Transitions:
    """The transition for each chunk of a run: ``compile`` "inductor" (captured and
    compiled), "graph" (captured, run as recorded) or "pyro" (eager, through Pyro). The
    captured graphs are kept from chunk to chunk and from run to run. A model/guide pair that
    cannot be recorded as one graph (it reads tensor values while it runs) falls back to
    "pyro", with a warning naming the reason."""

    def __init__(self, leapfrog_steps: int, compile: str) -> None:
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, got {compile!r}")
        self.leapfrog_steps = leapfrog_steps
        self.mode = compile

    @classmethod
    def for_run(
        cls, settings: AnnealingSettings, x: torch.Tensor, runs_per_chunk: int = 1
    ) -> Transitions:
        """The transitions of a run with ``settings`` over the images ``x``; its ``compile``
        True is "inductor", False "pyro", and None chosen by the work of the run: "pyro"
        below ``CAPTURE_FROM`` model evaluations (T L x runs x chunks), "graph" below
        ``COMPILE_FROM`` evaluations x rows of a chunk, else "inductor"."""
        mode = settings.compile
        if mode is None:
            evaluations = settings.num_steps * settings.leapfrog_steps * runs_per_chunk
            evaluations *= settings.num_chunks(x)
            rows = min(settings.chains * x.shape[0], settings.max_particles)
            mode = "inductor" if evaluations * rows >= COMPILE_FROM else "graph"
            mode = mode if evaluations >= CAPTURE_FROM else "pyro"
        elif isinstance(mode, bool):
            mode = "inductor" if mode else "pyro"
        return cls(settings.leapfrog_steps, mode)

    def __call__(self, densities: LatentDensities) -> Transition:
        if self.mode == "pyro":
            return eager_transition(densities, self.leapfrog_steps)
        backend = "inductor" if self.mode == "inductor" else "eager"
        captured = _kept(densities, self.leapfrog_steps, backend)
        eager = eager_transition(densities, self.leapfrog_steps)

        def transition(point: Point, beta: float, step_size: torch.Tensor):
            if self.mode == "pyro":
                return eager(point, beta, step_size)
            try:
                return captured(point, beta, step_size)
            except CaptureError as err:
                warnings.warn(f"annealing runs uncompiled: {err}", stacklevel=2)
                self.mode = "pyro"
                return eager(point, beta, step_size)

        return transition


def _identity(program: Callable) -> tuple:
    """A program's identity across accesses (``vae.model`` is a new bound method each time)."""
    owner = getattr(program, "__self__", None)
    return (id(owner), program.__func__) if owner is not None else (id(program),)


# The captured transitions of the last few model/guide pairs, so that the runs of one process
# (a warm-up, AIS then BDMC, a study's repeats) compile once.
_KEPT: OrderedDict[tuple, CapturedTransition] = OrderedDict()
KEEP = 4


def _kept(densities: LatentDensities, leapfrog_steps: int, backend: str) -> CapturedTransition:
    d = densities
    key = (_identity(d.model), _identity(d.guide), d.chains, d.initial, leapfrog_steps, backend)
    if key not in _KEPT:
        _KEPT[key] = CapturedTransition(densities, leapfrog_steps, backend)
        while len(_KEPT) > KEEP:
            _KEPT.popitem(last=False)
    _KEPT.move_to_end(key)
    return _KEPT[key].rebind(densities)
