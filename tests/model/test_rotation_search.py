"""The invariant VAE's search over R turns (pyro_vae.model.rotation_search).

Pyro's enumerated bound against the explicit sum over the turns written by hand (float64,
values and gradients); the turns run as one batch dimension (one decoder call); the encoder
turns with the image (a quarter turn shifts q(r|x) by one of four turns, exactly); the pose
and content are read at the most probable turn; the options' rules; a run trains, resumes,
and is evaluated.
"""

from __future__ import annotations

import math

import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from support import saved_data, some_images, tiny_config

from pyro_vae import train
from pyro_vae.checks.reference_invariant import pyro_and_invariant_reference_loss
from pyro_vae.checks.reference_losses import MissingReference
from pyro_vae.data import ImageData, rotated_mnist_sample
from pyro_vae.model.invariant import InvariantVAE, build_invariant_vae
from pyro_vae.model.rotation_search import candidate_angles, rows_at, wrapped
from pyro_vae.training.options import ConfigError, TrainConfig

SIDE = 6
TURNS = 4


def search_vae(turns: int = TURNS, **options) -> InvariantVAE:
    """A small invariant VAE with the search, every parameter moved off its initial value."""
    torch.manual_seed(1)
    vae = build_invariant_vae((1, SIDE, SIDE), z_dim=3, hidden=(8, 7), rotations=turns, **options)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return vae


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 3.0])
@pytest.mark.parametrize(
    "likelihood,invariances",
    [("bernoulli", "rotation+translation"), ("continuous-bernoulli", "rotation")],
)
@pytest.mark.parametrize("turns", [2, 4, 7])
def test_the_enumerated_bound_equals_the_explicit_sum_over_turns(
    float64, likelihood, invariances, beta, turns
):
    vae = search_vae(turns, likelihood=likelihood, invariances=invariances, beta=beta)
    x = some_images(likelihood)
    pyro_loss, ref_loss = pyro_and_invariant_reference_loss(
        vae, TraceEnum_ELBO(max_plate_nesting=1), x
    )
    torch.testing.assert_close(pyro_loss, ref_loss, rtol=1e-9, atol=1e-9)
    params = list(vae.parameters())
    pyro_grads = torch.autograd.grad(pyro_loss, params)
    ref_grads = torch.autograd.grad(ref_loss, params)
    for (name, _), g_pyro, g_ref in zip(vae.named_parameters(), pyro_grads, ref_grads, strict=True):
        torch.testing.assert_close(g_pyro, g_ref, rtol=1e-9, atol=1e-9, msg=name)
    assert any(g.abs().sum() > 0 for g in pyro_grads[-1:]), "the turn logit gets a gradient"


def test_the_reference_refuses_an_estimator_that_does_not_sum_the_turns():
    vae, x = search_vae(), some_images()
    with pytest.raises(MissingReference, match="TraceEnum_ELBO"):
        pyro_and_invariant_reference_loss(vae, Trace_ELBO(), x)
    with pytest.raises(MissingReference, match="one particle"):
        pyro_and_invariant_reference_loss(vae, TraceEnum_ELBO(num_particles=2), x)


def test_the_turns_are_one_batch_dimension_and_the_decoder_runs_once():
    vae, x = search_vae(), some_images(n=3)
    calls = []
    vae.decoder.register_forward_hook(lambda module, args, out: calls.append(out.shape))
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    model_trace, guide_trace = next(elbo._get_traces(vae.model, vae.guide, (x,), {}))
    assert calls == [(TURNS, 3, SIDE * SIDE)]
    assert guide_trace.nodes["r"]["infer"]["enumerate"] == "parallel"
    assert guide_trace.nodes["r"]["value"].shape == (TURNS, 1)
    assert guide_trace.nodes["z"]["value"].shape == (TURNS, 3, 3)
    assert model_trace.nodes["x"]["fn"].batch_shape == (TURNS, 3)


def test_a_quarter_turn_of_the_image_shifts_the_turns_by_one():
    """x'(c) = x(R(pi/2) c): the copy turned back by phi_r of x' is the copy r - 1 of x, so
    q(r | x') is q(r - 1 | x), the per-turn codes move with it, and the inferred angle grows
    by pi/2 (quarter turns move pixel centres onto pixel centres: exact)."""
    vae = search_vae(beta=1.0)
    x = some_images("continuous-bernoulli", n=4)
    turned = torch.rot90(x.reshape(-1, SIDE, SIDE), 1, dims=(1, 2)).reshape(4, -1)
    logits, loc, _ = vae.encoder(x)
    logits_t, loc_t, _ = vae.encoder(turned)
    torch.testing.assert_close(logits_t, logits.roll(1, -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loc_t, loc.roll(1, 0), atol=1e-5, rtol=1e-5)
    theta, _ = vae.pose(x)
    theta_t, _ = vae.pose(turned)
    torch.testing.assert_close(wrapped(theta_t - theta), torch.full((4,), math.pi / 2))
    torch.testing.assert_close(vae.encode(turned), vae.encode(x), atol=1e-5, rtol=1e-5)


def test_pose_and_content_are_read_at_the_most_probable_turn():
    vae, x = search_vae(), some_images(n=6)
    logits, loc, _ = vae.encoder(x)
    best = logits.argmax(-1)
    at_best = rows_at(loc, best)  # (N, z + theta + dx)
    torch.testing.assert_close(vae.encode(x), at_best[:, :3])
    theta, dx = vae.pose(x)
    torch.testing.assert_close(
        theta, wrapped(candidate_angles(TURNS).float()[best] + at_best[:, 3])
    )
    torch.testing.assert_close(dx, at_best[:, 4:6])
    expected = vae.decode(at_best[:, :3], theta=theta, dx=dx)
    torch.testing.assert_close(vae.reconstruct(x), expected)
    assert vae.sample(4).shape == (4, SIDE * SIDE)


def test_rows_at_takes_drawn_and_enumerated_turns():
    t = torch.arange(3 * 2 * 1.0).reshape(3, 2, 1)  # (R=3, N=2, 1)
    torch.testing.assert_close(rows_at(t, torch.tensor([2, 0])), torch.tensor([[4.0], [1.0]]))
    torch.testing.assert_close(rows_at(t, torch.arange(3)[:, None]), t)
    assert rows_at(t, torch.tensor([[2, 0], [1, 1]])).shape == (2, 2, 1)  # K draws


def test_the_offset_prior_defaults_to_half_a_turn_step():
    assert search_vae(8).theta_prior == pytest.approx(math.pi / 8)
    assert search_vae(8, theta_prior=0.3).theta_prior == 0.3
    assert build_invariant_vae((1, SIDE, SIDE), hidden=(4,)).theta_prior == pytest.approx(math.pi)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"rotations": 1}, "at least 2"),
        ({"rotations": -2}, "at least 2"),
        ({"rotations": 4, "invariances": "translation"}, "needs the rotation invariance"),
    ],
)
def test_the_builder_refuses_a_search_that_cannot_be(options, message):
    with pytest.raises(ValueError, match=message):
        build_invariant_vae((1, SIDE, SIDE), hidden=(4,), **options)


def test_the_options_choose_the_enumerating_estimator_and_refuse_the_rest():
    config = TrainConfig(dataset="mnist-rotated", model="invariant", rotations=8)
    assert config.estimator == "enum"
    plain = TrainConfig(dataset="mnist-rotated", model="invariant")
    assert plain.estimator == "mean-field" and plain.rotations == 0
    for bad, message in [
        ({"rotations": 8, "estimator": "mean-field"}, "--estimator enum"),
        ({"rotations": 8, "compile": True}, "drop --compile"),
        ({"estimator": "enum"}, "enum with --rotations"),
    ]:
        with pytest.raises(ConfigError, match=message):
            TrainConfig(dataset="mnist-rotated", model="invariant", **bad)
    with pytest.raises(ConfigError, match="--rotations does not apply"):
        TrainConfig(model="vae", rotations=4)


def test_a_run_with_the_search_trains_resumes_and_is_evaluated(tmp_path):
    """The first batch equals the hand-written loss; a run stopped after one epoch and
    resumed ends where an unbroken one ends, bit for bit; figures, the report and log p(x)."""
    from pyro_vae.cli import main

    d = rotated_mnist_sample().data
    data = ImageData(d.train_x[::20], d.train_y[::20], d.test_x[::20], d.test_y[::20])
    path = str(saved_data(tmp_path / "rotated.npz", data))  # (the report and evaluate read it)

    def config(out: str, epochs: int) -> TrainConfig:
        return tiny_config(
            tmp_path, model="invariant", data=path, hidden=(16, 16), z_dim=2, rotations=4,
            epochs=epochs, out=str(tmp_path / out),
        )  # fmt: skip

    straight = train(config("straight", 2))
    check = straight.summary["reference_check"]
    assert check["pyro_loss"] == pytest.approx(check["reference_loss"], rel=1e-4)
    assert straight.metrics[-1]["test_neg_elbo"] < straight.metrics[0]["test_neg_elbo"]
    train(config("resumed", 1))
    resumed = train(config("resumed", 2), resume=True)
    for (name, a), b in zip(straight.vae.named_parameters(), resumed.vae.parameters(), strict=True):
        assert torch.equal(a, b), name
    figures = {p.name for p in (tmp_path / "straight" / "figures").iterdir()}
    assert {"prior_samples.png", "reconstructions.png", "latent_map.png"} <= figures
    assert main(["report", str(tmp_path / "straight")]) == 0
    assert main(["evaluate", str(tmp_path / "straight"), "--num-samples", "20",
                 "--max-images", "10", "--no-progress"]) == 0  # fmt: skip
