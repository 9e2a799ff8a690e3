"""Free bits and capacity against the hand-written losses, and their defining properties."""

from __future__ import annotations

import itertools

import pytest
import torch
from support import grads, make_data, make_vae

from pyro_vae import make_estimator
from pyro_vae.checks import pyro_and_reference_loss
from pyro_vae.inference import CapacityELBO, FreeBitsELBO, LinearRamp


@pytest.mark.parametrize(
    "likelihood,prior,beta,elbo",
    [
        (lik, pri, beta, elbo)
        for lik, pri, beta in itertools.product(
            ["bernoulli", "gaussian-learned"], ["normal", "learned-normal"], [0.0, 0.5, 1.0]
        )
        for elbo in [
            FreeBitsELBO(0.0),
            FreeBitsELBO(0.3),
            FreeBitsELBO(50.0),
            CapacityELBO(5.0, 10.0),
            CapacityELBO(500.0, 2.0),
        ]
    ],
    ids=str,
)
def test_shaped_kl_equals_reference(float64, likelihood, prior, beta, elbo):
    vae = make_vae(likelihood, prior, beta)
    x = make_data(likelihood, n=6)
    pyro_loss, ref_loss = pyro_and_reference_loss(vae, elbo, x)
    torch.testing.assert_close(pyro_loss, ref_loss, rtol=1e-9, atol=0)
    for g, r in zip(
        grads(pyro_loss, list(vae.parameters())),
        grads(ref_loss, list(vae.parameters())),
        strict=True,
    ):
        torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-9)


def test_zero_free_bits_is_the_mean_field_elbo(float64):
    vae = make_vae("bernoulli", "learned-normal")
    x = make_data("bernoulli")
    torch.manual_seed(5)
    free = make_estimator("free-bits", free_bits=0.0).differentiable_loss(vae.model, vae.guide, x)
    torch.manual_seed(5)
    mean_field = make_estimator("mean-field").differentiable_loss(vae.model, vae.guide, x)
    torch.testing.assert_close(free, mean_field, rtol=1e-12, atol=0)


def test_dimensions_under_the_floor_feel_no_kl_gradient(float64):
    """With a floor above every dimension's KL, only the reconstruction term has gradient."""
    vae = make_vae("bernoulli", "normal", beta=1.0)
    x = make_data("bernoulli")
    torch.manual_seed(6)
    floored = make_estimator("free-bits", free_bits=1e3).differentiable_loss(
        vae.model, vae.guide, x
    )
    vae.beta = 0.0
    torch.manual_seed(6)
    recon = make_estimator("mean-field").differentiable_loss(vae.model, vae.guide, x)
    for g, r in zip(
        grads(floored, list(vae.parameters())), grads(recon, list(vae.parameters())), strict=True
    ):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


def test_capacity_rises_linearly():
    """--capacity-epochs: the trainer's schedule raises C from 0 to C_max, then holds it."""
    from pyro_vae import TrainConfig
    from pyro_vae.training.assemble import _schedules

    config = TrainConfig(estimator="capacity", capacity=20.0, capacity_gamma=5.0,
                         capacity_epochs=2.0, z_dim=3, hidden=(8,))  # fmt: skip
    elbo = make_estimator("capacity", **config.estimator_options())
    vae = make_vae("bernoulli", "normal")
    schedules = _schedules(config, vae, elbo, steps_per_epoch=5)  # 10 steps to C_max
    seen = []
    for step in (0, 5, 50):
        for schedule in schedules:
            schedule.update(step)
        seen.append(elbo.capacity)
    assert seen == [0.0, 10.0, 20.0]
    assert make_estimator("capacity", capacity=7.0).capacity == 7.0  # no schedule: C throughout
    assert LinearRamp(7.0)(0) == 7.0


def test_shaping_needs_a_factorised_prior():
    vae = make_vae("bernoulli", "mixture")
    with pytest.raises(ValueError, match="closed form"):
        FreeBitsELBO(0.5).loss(vae.model, vae.guide, make_data("bernoulli"))
    with pytest.raises(ValueError, match="takes no option 'num_particles'"):
        make_estimator("free-bits", num_particles=3)  # one particle, by construction
