"""On a GPU: a training step and the reference check, with every tensor on the device."""

from __future__ import annotations

import pyro
import pytest
import torch
from support import assert_step_trains

from pyro_vae import TrainConfig, build_vae, make_estimator, train
from pyro_vae.checks import check_against_reference
from pyro_vae.data import ImageData
from pyro_vae.inference import sync_free
from pyro_vae.training import CompiledStep

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("prior", ["normal", "mixture"])
@pytest.mark.parametrize(
    "estimator,options",
    [("trace", {}), ("mean-field", {}), ("iwae", {"num_particles": 50, "grad": "dreg"})],
)
def test_reference_check_on_cuda(estimator, options, prior):
    vae = build_vae((1, 28, 28), prior=prior, z_dim=8, beta=0.5).cuda()
    x = torch.bernoulli(torch.rand(64, 784, device="cuda"))
    p, r = check_against_reference(vae, make_estimator(estimator, **options), x)
    assert p == pytest.approx(r, rel=1e-4)


def test_training_runs_on_cuda(tmp_path, mnist_sample):
    d = mnist_sample
    data = ImageData(d.train_x[:1024], d.train_y[:1024], d.test_x[:256], d.test_y[:256])
    result = train(TrainConfig(epochs=2, device="cuda", out=str(tmp_path), progress=False), data)
    assert result.summary["device"].startswith("cuda")
    assert next(result.vae.parameters()).is_cuda
    assert result.metrics[-1]["test_neg_elbo"] < result.metrics[0]["test_neg_elbo"]


def test_cuda_graph_replays_equal_the_reference_with_fresh_noise():
    """Checked on replays (the first calls only warm up and record), like the eager loss."""
    torch.manual_seed(0)
    vae = build_vae((1, 28, 28), z_dim=8).cuda()
    x = torch.bernoulli(torch.rand(64, 784, device="cuda"))
    elbo = sync_free(make_estimator("mean-field"))
    step = CompiledStep(vae, elbo, cuda_graphs=True)
    draws = [step(x, 1.0)[1].clone() for _ in range(4)]
    assert not torch.equal(draws[-1], draws[-2])  # the noise is fresh on every replay
    p, r = check_against_reference(vae, elbo, x, step=step)
    assert p == pytest.approx(r, rel=1e-4)
    assert_step_trains(step, x)


def test_training_with_cuda_graphs(tmp_path, mnist_sample):
    d = mnist_sample
    data = ImageData(d.train_x[:1024], d.train_y[:1024], d.test_x[:256], d.test_y[:256])
    config = TrainConfig(
        epochs=2, device="cuda", compile=True, cuda_graphs=True, out=str(tmp_path), progress=False
    )
    result = train(config, data)  # includes the reference check on the compiled step
    assert result.summary["cuda_graphs"] is True
    assert result.metrics[-1]["test_neg_elbo"] < result.metrics[0]["test_neg_elbo"]


@pytest.mark.parametrize("precision,rel", [("bf16", 1e-2), ("tf32", 1e-3)])
def test_reduced_precision_loss_agrees_with_fp32_on_cuda(precision, rel):
    """Stated tolerances: bf16 autocast within 1% of the fp32 loss, TF32 matrix products
    within 0.1%, for the same noise."""
    vae = build_vae((1, 28, 28), z_dim=16).cuda()
    x = torch.bernoulli(torch.rand(128, 784, device="cuda"))
    elbo = sync_free(make_estimator("mean-field"))
    pyro.set_rng_seed(1)
    full = float(elbo.differentiable_loss(vae.model, vae.guide, x))
    pyro.set_rng_seed(1)
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            low = float(elbo.differentiable_loss(vae.model, vae.guide, x))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    assert low == pytest.approx(full, rel=rel)
