"""Denormal floats flushed on every thread torch computes with (pyro_vae/training/denormals.py):
the mode reaches the OpenMP worker, not only the calling thread; it is put back afterwards; a
run trains under it with ``--denormals flush`` and without it with ``keep``."""

from __future__ import annotations

import threading

import pytest
import torch
from support import tiny_config

from pyro_vae.training import Trainer, assemble, fit
from pyro_vae.training.denormals import flushed_denormals, flushing, on_every_thread
from pyro_vae.training.observers import Observer

DENORMAL = 1e-39  # below float32's smallest normal number, 2**-126 = 1.18e-38
N = 1 << 20  # enough elements for a parallel kernel to give each thread a share

pytestmark = pytest.mark.skipif(
    torch.tensor([DENORMAL]).item() == 0.0 or not torch.set_flush_denormal(False),
    reason="this CPU has no denormals, or torch cannot flush them on it",
)


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def survivors() -> int:
    """How many of N denormals survive a halving computed by all of torch's threads: each
    thread that reads denormals as zero (DAZ) turns its share into zeros."""
    return int((torch.full((N,), DENORMAL) * 0.5 != 0).sum())


def test_the_flush_reaches_every_thread_and_is_undone(two_threads):
    assert survivors() == N
    with flushed_denormals():
        assert flushing()
        assert survivors() == 0  # the worker's half too, not only the calling thread's
    assert not flushing()
    assert survivors() == N


def test_keep_leaves_ieee_arithmetic(two_threads):
    with flushed_denormals(enabled=False):
        assert survivors() == N


def test_a_flush_already_on_stays_on(two_threads):
    with flushed_denormals():
        with flushed_denormals():
            pass
        assert survivors() == 0
    assert survivors() == N


def test_every_thread_of_the_team_runs_it_once(two_threads):
    idents: list[int] = []
    assert on_every_thread(lambda: idents.append(threading.get_ident())) == 2
    assert len(set(idents)) == 2
    assert threading.get_ident() in idents


def test_adams_moment_of_an_idle_weight_ends_at_zero_not_denormal():
    """The case the flush is for: after one gradient, m_t = 0.9^t m_1 falls below 1.18e-38
    within 900 steps of zero gradients; flushed it is 0; kept it is a denormal, and stays one
    (0.9 x 4 * 2^-149 rounds back to 4 * 2^-149)."""

    def first_moment_after(steps: int) -> float:
        w = torch.zeros(4, requires_grad=True)
        adam = torch.optim.Adam([w], lr=1e-3, fused=True)
        w.grad = torch.full((4,), 1e-6)
        adam.step()
        w.grad = torch.zeros(4)
        for _ in range(steps):
            adam.step()
        return adam.state[w]["exp_avg"][0].item()

    kept = first_moment_after(900)
    assert 0.0 < kept < torch.finfo(torch.float32).tiny
    assert first_moment_after(3000) == kept == 4 * 2.0**-149
    with flushed_denormals():
        assert first_moment_after(900) == 0.0


class FlushSeen(Observer):
    def __init__(self) -> None:
        self.seen: set[bool] = set()

    def on_step_end(self, trainer, epoch_loss) -> None:
        self.seen.add(flushing())


@pytest.mark.parametrize("mode", ["flush", "keep"])
def test_a_run_trains_in_the_mode_it_asks_for(small_data, tmp_path, mode):
    config = tiny_config(tmp_path, epochs=1, denormals=mode, check_reference=False)
    seen = FlushSeen()
    Trainer(assemble(config, small_data), observers=[seen]).fit()
    assert seen.seen == {mode == "flush"}
    assert not flushing()  # and leaves the process as it found it


def test_an_unknown_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="choose one of: flush, keep"):
        tiny_config(tmp_path, denormals="ftz")


@pytest.mark.parametrize("mode", ["flush", "keep"])
def test_evaluation_runs_in_the_mode_the_run_trained_in(small_data, tmp_path, monkeypatch, mode):
    from pyro_vae.training import evaluate as evaluation

    config = tiny_config(tmp_path, epochs=1, denormals=mode, tensorboard=False)
    fit(config, small_data)
    seen, measure = [], evaluation._importance_sampling

    def recording(*args, **kwargs):
        seen.append(flushing())
        return measure(*args, **kwargs)

    monkeypatch.setattr(evaluation, "_importance_sampling", recording)
    evaluation.evaluate_run(config.out, 4, max_images=8, progress=False, data=small_data)
    assert seen == [mode == "flush"]
    assert not flushing()
