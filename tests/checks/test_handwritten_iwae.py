"""The hand-written vectorised IWAE loss of the benchmark's baseline against this project's IWAE
estimator: in float64, for the same noise, the same value and the same gradients, encoder
and decoder, under each gradient estimator (standard, STL, DReG)."""

from __future__ import annotations

import pytest
import torch
from support import grads, loss_and_eps, make_data, make_vae

from pyro_vae import IWAE
from pyro_vae.checks import HandwrittenVAE
from pyro_vae.checks.baseline_vae import handwritten_iwae_loss

K = 5


def _vae_data_and_loss(grad: str):
    """A small Bernoulli VAE, binary data, and the estimator's loss with the noise it drew."""
    vae = make_vae("bernoulli", "normal")
    x = make_data("bernoulli", n=4)
    loss, eps = loss_and_eps(vae, IWAE(num_particles=K, grad=grad, max_plate_nesting=1), x)
    return vae, x, loss, eps.reshape(K, x.shape[0], -1)


@pytest.mark.parametrize("grad", ["standard", "stl", "dreg"])
def test_the_handwritten_iwae_equals_the_estimator(float64, grad):
    vae, x, loss, eps = _vae_data_and_loss(grad)
    encoder, decoder = list(vae.encoder.parameters()), list(vae.decoder.parameters())
    assert {id(p) for p in vae.parameters()} == {id(p) for p in encoder + decoder}
    mine = handwritten_iwae_loss(vae.encoder, vae.decoder, x, K, grad, eps=eps)
    torch.testing.assert_close(mine, loss, rtol=1e-10, atol=0)
    want = grads(loss, encoder + decoder)
    got = torch.autograd.grad(mine, encoder + decoder)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        role = "encoder" if i < len(encoder) else "decoder"
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10, msg=f"{grad}: {role} param {i}")


def test_dreg_changes_only_the_encoder_gradient(float64):
    """DReG's decoder gradient is the standard one; its encoder gradient is not."""
    vae, x, _, eps = _vae_data_and_loss("dreg")
    encoder, decoder = list(vae.encoder.parameters()), list(vae.decoder.parameters())
    by = {
        grad: torch.autograd.grad(
            handwritten_iwae_loss(vae.encoder, vae.decoder, x, K, grad, eps=eps), encoder + decoder
        )
        for grad in ("standard", "dreg")
    }
    for s, d in zip(by["standard"][len(encoder) :], by["dreg"][len(encoder) :], strict=True):
        torch.testing.assert_close(d, s, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(by["standard"][0], by["dreg"][0], rtol=1e-3)


def test_the_baseline_trains_by_the_iwae_loss_it_is_given(small_data):
    model = HandwrittenVAE(small_data, hidden=(16,), z_dim=3, particles=K, grad="dreg")
    x = torch.bernoulli(small_data.train_x[:8])
    params = list(model.encoder.parameters())
    torch.manual_seed(5)
    got = model.loss(x)
    got_grads = torch.autograd.grad(got, params)
    torch.manual_seed(5)
    want = handwritten_iwae_loss(model.encoder, model.decoder, x, K, "dreg")
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    for g, w in zip(got_grads, torch.autograd.grad(want, params), strict=True):
        torch.testing.assert_close(g, w)
    loss, seconds = model.epoch()
    assert loss > 0 and seconds > 0
    with pytest.raises(ValueError, match="needs the IWAE loss"):
        HandwrittenVAE(small_data, hidden=(16,), z_dim=3, grad="dreg")
