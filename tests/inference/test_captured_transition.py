"""The HMC transition captured as one graph: the same chains as through Pyro for the same
seed (AIS and BDMC), compiled or not; its choice by the run's size; one capture per model."""

from __future__ import annotations

import pyro
import pytest
import torch

from pyro_vae import build_vae, param_store
from pyro_vae.checks.linear_gaussian import LinearGaussian
from pyro_vae.inference import captured_transition
from pyro_vae.inference.ais import ais_log_likelihood
from pyro_vae.inference.annealing import AnnealingSettings
from pyro_vae.inference.bdmc import bdmc, simulate
from pyro_vae.inference.captured_transition import Transitions


def _vae_and_images(hidden: int = 32, z_dim: int = 3, n: int = 6):
    torch.manual_seed(0)
    vae = build_vae((1, 8, 8), hidden=[hidden], z_dim=z_dim)
    x = torch.bernoulli(torch.rand(n, 64, generator=torch.Generator().manual_seed(1)))
    return vae, x


def _ais(vae, x, mode: str, steps: int = 12):
    pyro.set_rng_seed(5)
    with param_store.off():
        return ais_log_likelihood(vae.model, vae.guide, x, steps, chains=3, compile=mode)


@pytest.mark.parametrize("mode", ["graph", "inductor"])
def test_captured_ais_moves_the_chains_as_pyro_does(mode):
    """Same seed, same momenta and uniforms, same accepted moves: the log weights and step
    sizes of the run through Pyro, to float32 rounding (the products may run in oneDNN)."""
    vae, x = _vae_and_images()
    eager, captured = _ais(vae, x, "pyro"), _ais(vae, x, mode)
    assert (eager.transitions, captured.transitions) == ("pyro", mode)
    torch.testing.assert_close(captured.log_weights, eager.log_weights, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(captured.step_sizes, eager.step_sizes, rtol=1e-6, atol=0)
    torch.testing.assert_close(captured.acceptance, eager.acceptance)


def test_captured_bdmc_gives_both_bounds_as_pyro_does():
    """The reverse runs share the forward runs' captured transition."""
    lg = LinearGaussian().exact()
    x = lg.sample(5)
    z, xs = simulate(lg.model, 5, x)
    runs = {}
    for mode in ("pyro", "graph"):
        pyro.set_rng_seed(2)
        runs[mode] = bdmc(lg.model, lg.guide, xs, z, 9, chains=4, compile=mode)
    torch.testing.assert_close(runs["graph"].lower, runs["pyro"].lower)
    torch.testing.assert_close(runs["graph"].upper, runs["pyro"].upper)


def test_one_capture_serves_every_run_of_a_model(monkeypatch):
    """A warm-up and the run after it, or AIS and then BDMC, capture once per model, chain
    count and chunk shape; another model is captured anew and gets its own estimate."""
    made = []
    real = captured_transition.capture
    monkeypatch.setattr(captured_transition, "capture", lambda *a: made.append(1) or real(*a))
    monkeypatch.setattr(captured_transition, "_KEPT", type(captured_transition._KEPT)())
    vae, x = _vae_and_images()
    _ais(vae, x, "graph", steps=3)
    first = _ais(vae, x, "graph")
    assert len(made) == 1
    other, _ = _vae_and_images(hidden=16)
    theirs = _ais(other, x, "graph")
    assert len(made) == 2
    torch.testing.assert_close(theirs.log_weights, _ais(other, x, "pyro").log_weights)
    assert not torch.allclose(theirs.log_weights, first.log_weights)


@pytest.mark.parametrize(
    "compile, steps, images, expected",
    [(True, 2, 3, "inductor"), (False, 500, 3, "pyro"), ("graph", 2, 3, "graph"),
     (None, 50, 3, "pyro"), (None, 100, 3, "graph"), (None, 500, 300, "inductor")],
)  # fmt: skip
def test_the_transitions_are_chosen_by_the_runs_size(compile, steps, images, expected):
    """compile=None: through Pyro below CAPTURE_FROM model evaluations (T L x chunks),
    captured below COMPILE_FROM evaluations x rows (8 chains x images), compiled from there."""
    settings = AnnealingSettings(num_steps=steps, leapfrog_steps=4, compile=compile)
    assert Transitions.for_run(settings, torch.zeros(images, 4)).mode == expected


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="compile must be one of"):
        Transitions(2, "fast")
