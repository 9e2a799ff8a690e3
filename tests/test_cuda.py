"""On a GPU: a training step and the reference check, with every tensor on the device."""

from __future__ import annotations

import pytest
import torch

from pyro_vae import build_vae, make_estimator
from pyro_vae.data import ImageData
from pyro_vae.reference import check_against_reference
from pyro_vae.training import TrainConfig, train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("prior", ["normal", "mixture"])
@pytest.mark.parametrize(
    "estimator,particles,grad",
    [("trace", 1, "standard"), ("mean-field", 1, "standard"), ("iwae", 50, "dreg")],
)
def test_reference_check_on_cuda(estimator, particles, grad, prior):
    vae = build_vae((1, 28, 28), prior=prior, z_dim=8, beta=0.5).cuda()
    x = torch.bernoulli(torch.rand(64, 784, device="cuda"))
    p, r = check_against_reference(vae, make_estimator(estimator, particles, grad), x)
    assert p == pytest.approx(r, rel=1e-4)


def test_training_runs_on_cuda(tmp_path, mnist_sample):
    d = mnist_sample
    data = ImageData(d.train_x[:1024], d.train_y[:1024], d.test_x[:256], d.test_y[:256])
    result = train(TrainConfig(epochs=2, device="cuda", out=str(tmp_path), progress=False), data)
    assert result.summary["device"].startswith("cuda")
    assert next(result.vae.parameters()).is_cuda
    assert result.metrics[-1]["test_neg_elbo"] < result.metrics[0]["test_neg_elbo"]
