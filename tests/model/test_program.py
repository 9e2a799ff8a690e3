"""A bare Pyro model/guide pair in the pipeline (:class:`pyro_vae.PyroProgram`): its store
parameters are the module's, beta reaches its latent sites, it trains, checkpoints, resumes
bit for bit and evaluates; figures that need a decoder are left out."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch import nn

import pyro_vae
from pyro_vae import PyroProgram
from pyro_vae.training.schema import ConfigError


def _pair(seed: int = 0):
    """Two functions in the style of Pyro's examples: pyro.module for the networks and a
    pyro.param of its own (a positive prior scale, stored unconstrained)."""
    torch.manual_seed(seed)
    decoder = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 784))
    encoder = nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 4))

    def model(x):
        pyro.module("decoder", decoder)
        width = pyro.param("prior_width", torch.ones(2), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, width).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide, encoder, decoder


@pytest.fixture(autouse=True)
def _fresh_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


OPTIONS = dict(
    binarize="dynamic", batch_size=500, progress=False, tensorboard=False, device="cpu"
)  # fmt: skip


def test_capture_holds_the_stores_tensors_as_its_parameters():
    model, guide, encoder, decoder = _pair()
    program = PyroProgram(model, guide)
    program.capture(torch.zeros(2, 784))
    store = pyro.get_param_store()
    mine = dict(program.named_parameters())
    assert store._params["prior_width"] is mine["store.prior_width"]  # unconstrained: log 1
    torch.testing.assert_close(mine["store.prior_width"], torch.zeros(2))
    assert mine["store.decoder$$$0·weight"] is decoder[0].weight
    assert {id(p) for p in program.parameters()} >= {id(p) for p in encoder.parameters()}


def test_beta_weights_the_pairs_latent_sites():
    model, guide, *_ = _pair()
    program = PyroProgram(model, guide)
    x = torch.rand(6, 784).bernoulli()
    program.capture(x)
    elbo = Trace_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(3)
    plain = elbo.differentiable_loss(model, guide, x)
    pyro.set_rng_seed(3)  # the same z, drawn by hand through Pyro's traces
    trace_g = pyro.poutine.trace(guide).get_trace(x)
    trace_m = pyro.poutine.trace(pyro.poutine.replay(model, trace=trace_g)).get_trace(x)
    trace_m.compute_log_prob()
    trace_g.compute_log_prob()
    log_px, log_pz = trace_m.nodes["x"]["log_prob_sum"], trace_m.nodes["z"]["log_prob_sum"]
    log_qz = trace_g.nodes["z"]["log_prob_sum"]
    program.beta = 4.0
    pyro.set_rng_seed(3)
    weighted = elbo.differentiable_loss(program.model, program.guide, x)
    torch.testing.assert_close(weighted, -(log_px + 4.0 * (log_pz - log_qz)), rtol=1e-6, atol=0)
    torch.testing.assert_close(plain, -(log_px + log_pz - log_qz), rtol=1e-6, atol=0)


def test_a_pair_trains_resumes_bit_for_bit_and_evaluates(tmp_path):
    model, guide, *_ = _pair()
    whole = pyro_vae.train(vae=(model, guide), epochs=2, out=str(tmp_path / "whole"), **OPTIONS)
    ran = {k: v.clone() for k, v in whole.vae.state_dict().items()}
    assert whole.summary["reference_check"]["check"] == "pyro"
    figures = {p.name for p in (tmp_path / "whole" / "figures").iterdir()}
    assert figures == {"loss_curves.png", "latent_map.png", "kl_per_dimension.png"}

    pyro.clear_param_store()
    model, guide, *_ = _pair()  # the same initial weights, in a fresh store
    pyro_vae.train(vae=(model, guide), epochs=1, out=str(tmp_path / "cut"), **OPTIONS)
    pyro.clear_param_store()
    model, guide, *_ = _pair(seed=1)  # other weights: the checkpoint's must replace them
    resumed = pyro_vae.train(
        vae=(model, guide), resume=True, epochs=2, out=str(tmp_path / "cut"), progress=False
    )
    timeless = [{k: v for k, v in r.items() if "seconds" not in k} for r in resumed.metrics]
    assert timeless == [{k: v for k, v in r.items() if "seconds" not in k} for r in whole.metrics]
    for key, value in resumed.vae.state_dict().items():
        assert torch.equal(value, ran[key]), key

    run = pyro_vae.load_run(tmp_path / "whole", vae=_pair(seed=2)[:2], device="cpu")
    for key, value in run.vae.state_dict().items():
        assert torch.equal(value, ran[key]), key
    ll = pyro_vae.log_likelihood(run.vae.model, run.vae.guide, run.test_x[:20], num_samples=50)
    bound = pyro_vae.evaluate_elbo(run.vae.model, run.vae.guide, run.test_x[:20])
    assert -bound.neg_elbo <= ll.mean + 3 * ll.mean_stderr  # ELBO <= log p(x), within noise


def test_what_a_pair_cannot_do_is_one_line(tmp_path):
    model, guide, *_ = _pair()
    with pytest.raises(ConfigError, match="--compile"):
        pyro_vae.train(vae=(model, guide), compile=True, out=str(tmp_path / "c"), **OPTIONS)
    with pytest.raises(TypeError, match="model and guide"):
        pyro_vae.train(vae=object(), out=str(tmp_path / "o"), **OPTIONS)
    with pytest.raises(AttributeError, match="no decoder"):
        PyroProgram(model, guide).sample(4)
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()
