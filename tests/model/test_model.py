from __future__ import annotations

import pyro
import pyro.optim
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

from pyro_vae import NETWORKS, PRIORS, KLWarmup, build_vae, make_estimator
from pyro_vae.model import NetworkShapeError
from pyro_vae.registry import UnknownNameError


def test_model_and_guide_are_plain_pyro_programs():
    vae = build_vae((1, 28, 28), z_dim=4, hidden=(32,))
    x = torch.bernoulli(torch.rand(5, 784))
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    for trace in (guide_trace, model_trace):
        z = trace.nodes["z"]
        assert z["value"].shape == (5, 4)
        assert [f.name for f in z["cond_indep_stack"]] == ["data"]
    x_site = model_trace.nodes["x"]
    assert x_site["is_observed"] and torch.equal(x_site["value"], x)
    assert [f.name for f in x_site["cond_indep_stack"]] == ["data"]
    assert not guide_trace.nodes["z"]["is_observed"]


def test_pyro_svi_trains_it(mnist_sample):
    """``SVI(vae.model, vae.guide, ...)`` as a Pyro user would write it lowers the loss."""
    torch.manual_seed(0)
    vae = build_vae((1, 28, 28), z_dim=8, hidden=(128,))
    x = torch.bernoulli(mnist_sample.train_x[:512])
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    first = sum(svi.step(x[i : i + 128]) for i in range(0, 512, 128)) / 512
    for _ in range(15):
        last = sum(svi.step(x[i : i + 128]) for i in range(0, 512, 128)) / 512
    assert last < first - 100  # 543 -> ~200 nats per image in practice


@pytest.mark.parametrize("network", NETWORKS.names())
def test_networks_shapes(network):
    vae = build_vae((1, 28, 28), network=network, z_dim=5)
    x = torch.rand(3, 784)
    loc, scale = vae.encoder(x)
    assert loc.shape == scale.shape == (3, 5) and bool((scale > 0).all())
    assert vae.decoder(loc).shape == (3, 784)
    # particle dimensions on the left pass through (vectorised estimators need this)
    assert vae.decoder(torch.randn(2, 3, 5)).shape == (2, 3, 784)
    # reconstructions decode the posterior mean, E[x | z = loc(x)]
    torch.testing.assert_close(vae.reconstruct(x), torch.sigmoid(vae.decoder(loc)))
    # samples decode draws from the prior
    torch.manual_seed(3)
    samples = vae.sample(7)
    torch.manual_seed(3)
    torch.testing.assert_close(samples, torch.sigmoid(vae.decoder(torch.randn(7, 5))))
    assert 0 < float(samples.min()) and float(samples.max()) < 1


def test_conv_rejects_other_shapes():
    with pytest.raises(NetworkShapeError, match="28x28"):
        build_vae((3, 16, 16), network="conv")


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownNameError, match="bernoulli, continuous-bernoulli"):
        build_vae((1, 28, 28), likelihood="bernouli")
    with pytest.raises(UnknownNameError, match="normal, learned-normal, mixture"):
        build_vae((1, 28, 28), prior="gauss")
    with pytest.raises(UnknownNameError, match="trace, mean-field"):
        make_estimator("iwa")
    with pytest.raises(ValueError, match="particles"):
        make_estimator("trace", num_particles=0)


def test_options_reach_the_parts_that_take_them():
    vae = build_vae(
        (1, 28, 28),
        likelihood="gaussian",
        prior="mixture",
        sigma=0.3,
        components=7,
        hidden=(64, 32),
    )
    assert vae.likelihood.sigma == 0.3
    assert vae.prior.logits.shape == (7,)
    assert vae.encoder.body[0][0].out_features == 64


def test_kl_warmup_is_linear_from_zero():
    schedule = KLWarmup(beta=2.0, warmup_steps=4)
    assert [schedule(t) for t in range(6)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    assert KLWarmup(beta=0.5)(0) == 0.5
    with pytest.raises(ValueError):
        KLWarmup(beta=-1.0)


@pytest.mark.parametrize("prior", PRIORS.names())
def test_parameters_follow_the_module_dtype(prior):
    """Every prior's tensors (parameters and buffers) follow ``.double()``; sampling too."""
    small = {"pseudo_inputs": 4} if prior == "vamp" else {}
    vae = build_vae((1, 28, 28), likelihood="gaussian-learned", prior=prior, z_dim=3, **small)
    vae = vae.double()
    x = torch.rand(2, 784, dtype=torch.float64)
    loss = make_estimator("mean-field").differentiable_loss(vae.model, vae.guide, x)
    assert loss.dtype == torch.float64
    assert vae.sample(3).dtype == torch.float64
    assert vae.prior().sample().dtype == torch.float64
    pyro.clear_param_store()


def test_normal_prior_state_is_in_the_state_dict():
    """The standard normal's loc and scale are buffers: saved with the model, moved with it."""
    state = build_vae((1, 28, 28), z_dim=3).state_dict()
    assert torch.equal(state["prior.loc"], torch.zeros(3))
    assert torch.equal(state["prior.scale"], torch.ones(3))
