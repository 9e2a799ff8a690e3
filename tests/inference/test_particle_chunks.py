"""log p(x)'s chunks and its compiled path: the same estimate as the eager loop and as the
importance-sampling loop written by hand, for the same noise."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from benchmarks.handwritten_log_likelihood import handwritten_log_likelihood
from benchmarks.log_likelihood_eval import decoder_flops_per_particle
from pyro_vae import build_vae, param_store
from pyro_vae.checks.linear_gaussian import LinearGaussian
from pyro_vae.inference import (
    ImportanceSampler,
    importance_log_weights,
    log_likelihood,
    particle_chunks,
)
from pyro_vae.inference.graph_compiler import capture, owning_modules, split_addmm
from pyro_vae.inference.particle_chunks import ChunkPlan, _cache_bytes


@pytest.mark.parametrize(
    "images, samples, row_bytes, budget",
    [(1000, 5000, 3136, 2 << 20), (300, 50, 64, 1 << 20), (7, 13, 3136, 10_000), (2, 5, 8, 8)],
)
def test_a_chunk_fits_the_budget_and_splits_k_evenly(images, samples, row_bytes, budget):
    plan = ChunkPlan.for_data(images, samples, row_bytes, budget)
    rows = max(1, budget // row_bytes)
    assert 1 <= plan.images <= images and 1 <= plan.particles <= samples
    assert plan.images * plan.particles <= max(rows, plan.particles)
    pieces = math.ceil(samples / plan.particles)
    assert pieces == math.ceil(samples / rows)  # no more chunks than the budget needs
    assert samples - (pieces - 1) * plan.particles > 0  # and every chunk holds particles


def test_the_plan_for_mnist_and_k_5000(monkeypatch):
    """Two pieces of 2500 particles for one 784-pixel image at 8 MB (a quarter of 32 MB), and
    no larger where sysfs reports a host's whole cache (480 MiB on a small virtual machine)."""
    assert ChunkPlan.for_data(1000, 5000, 784 * 4, 8 << 20) == ChunkPlan(1, 2500)
    assert _cache_bytes() >= 1 << 14
    for cache in (32 << 20, 480 << 20):
        monkeypatch.setattr(particle_chunks, "_cache_bytes", lambda cache=cache: cache)
        assert ChunkPlan.for_data(1000, 5000, 784 * 4) == ChunkPlan(1, 2500)
    monkeypatch.setattr(particle_chunks, "_cache_bytes", lambda: 4 << 20)  # a quarter: 1 MiB
    assert ChunkPlan.for_data(1000, 5000, 784 * 4) == ChunkPlan(1, 334)  # 334 rows, 15 pieces


def _small_vae(dtype=torch.float64):
    torch.manual_seed(0)
    vae = build_vae((1, 28, 28), hidden=(32,), z_dim=4).to(dtype)
    return vae, torch.bernoulli(torch.rand(5, 784)).to(dtype)


def _estimate(vae, x, stderr=False, **kwargs):
    pyro.set_rng_seed(3)
    with param_store.off():
        result = log_likelihood(vae.model, vae.guide, x, 60, **kwargs)
    return (result.per_image, result.stderr) if stderr else result.per_image


def test_pyro_vae_equals_the_handwritten_loop_for_the_same_noise():
    vae, x = _small_vae()
    ours = _estimate(vae, x, batch_size=2, particle_batch=25)
    pyro.set_rng_seed(3)
    hand = handwritten_log_likelihood(vae.encoder, vae.decoder, x, 60, 2, 25)
    torch.testing.assert_close(ours, hand, rtol=1e-12, atol=1e-12)


def test_the_standard_error_is_the_delta_method_one():
    """sd(w) / (sqrt(K) mean(w)) per image, from the log-weights of one chunk of K."""
    vae, x = _small_vae()
    per_image, stderr = _estimate(vae, x, True, batch_size=5, particle_batch=60)
    pyro.set_rng_seed(3)
    with param_store.off():
        log_w = importance_log_weights(vae.model, vae.guide, x, 60)
    top = log_w.max(0).values
    w = (log_w - top).exp()  # the relative error does not depend on the scale of w
    torch.testing.assert_close(per_image, w.mean(0).log() + top)
    torch.testing.assert_close(stderr, w.std(0) / (60**0.5 * w.mean(0)))


def test_the_captured_graph_equals_the_eager_loop():
    vae, x = _small_vae()
    eager = _estimate(vae, x, True, batch_size=2, particle_batch=25)
    graph = _estimate(vae, x, True, batch_size=2, particle_batch=25, compile="eager")
    torch.testing.assert_close(graph, eager, rtol=1e-12, atol=1e-12)


def test_inductor_gives_the_same_estimate_to_1e_6_in_float32():
    vae, x = _small_vae(torch.float32)
    eager = _estimate(vae, x, True)
    compiled = _estimate(vae, x, True, compile=True)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(compiled[1], eager[1], rtol=1e-4, atol=1e-7)


def test_a_sampler_reads_the_parameters_afresh_at_every_call():
    """The graph takes the parameters as inputs: after they change, it sees the new ones."""
    vae, x = _small_vae()
    sampler = ImportanceSampler(vae.model, vae.guide, 60, compile="eager")
    with param_store.off():
        sampler(x)
        last = vae.decoder.net[-1]
        last.bias = torch.nn.Parameter(last.bias.detach() + 1.0)  # a new tensor, not in place
        pyro.set_rng_seed(3)
        after = sampler(x).per_image
    torch.testing.assert_close(after, _estimate(vae, x), rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:.*was not registered in the param store")
def test_the_default_chunks_keep_the_estimate_exact_at_the_true_posterior():
    lg = LinearGaussian().exact()
    x = lg.sample(50)
    for compile in (False, "eager"):
        est = log_likelihood(lg.model, lg.guide, x, 40, compile=compile)
        torch.testing.assert_close(est.per_image.double(), lg.log_evidence(x).detach())


def test_owning_modules_finds_each_module_once():
    vae, _ = _small_vae()
    assert owning_modules(vae.model, vae.guide) == [vae]
    assert owning_modules(vae.decoder, lambda x: x) == [vae.decoder]


def test_decoder_flops_count_every_linear_layer():
    vae = build_vae((1, 28, 28), hidden=(400,), z_dim=50)
    assert decoder_flops_per_particle(vae.decoder) == 2 * (50 * 400 + 400 * 784)


def test_split_addmm_keeps_the_values_and_leaves_no_addmm():
    torch.manual_seed(0)
    layer, a = torch.nn.Linear(5, 3), torch.randn(4, 5)
    graph = capture(lambda a: torch.relu(layer(a)), a)
    targets = lambda g: {n.target for n in g.graph.nodes}  # noqa: E731
    assert torch.ops.aten.addmm.default in targets(graph)
    expected = graph(a)
    split_addmm(graph.graph)
    graph.recompile()
    assert torch.ops.aten.addmm.default not in targets(graph)
    torch.testing.assert_close(graph(a), expected, rtol=0, atol=1e-6)
