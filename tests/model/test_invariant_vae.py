"""The invariant VAE (spatial-VAE, Bepler et al., 2019) and the rotated MNIST sample.

Rotation conventions (a quarter turn is ``torch.rot90``, a blob moves to R(-a) p), the model's
pixel grid against ``affine_grid``, the coordinate decoder's equivariance, Pyro's ELBOs against
the hand-written loss in float64 (values and gradients), the builder's refusals, the seeded
dataset and a short training run.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.optim import Adam
from support import some_images

from pyro_vae.checks.reference_invariant import pyro_and_invariant_reference_loss
from pyro_vae.checks.reference_losses import MissingReference
from pyro_vae.data import DataError, load_dataset
from pyro_vae.data.rotated import (
    ALIGN_CORNERS,
    rotate_images,
    rotated_mnist_sample,
    rotation_matrices,
)
from pyro_vae.inference.sync_free import MeanFieldELBO, MonteCarloELBO
from pyro_vae.model.invariant import (
    InvariantVAE,
    build_invariant_vae,
    pixel_grid,
    transform_coordinates,
)
from pyro_vae.registry import OptionError

SIDE = 6
BETAS = [0.0, 0.5, 1.0, 3.0]
# (likelihood, invariances): both likelihoods with both pose variables, each pose alone, none
CASES = [
    ("bernoulli", "rotation+translation"),
    ("continuous-bernoulli", "rotation+translation"),
    ("bernoulli", "rotation"),
    ("continuous-bernoulli", "translation"),
    ("bernoulli", "none"),
]


def small_vae(side: int = SIDE, hidden=(8, 7), z_dim: int = 3, **options) -> InvariantVAE:
    """A small invariant VAE whose every parameter is moved off its initial value."""
    torch.manual_seed(1)
    vae = build_invariant_vae((1, side, side), z_dim=z_dim, hidden=hidden, **options)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return vae


def blob(centre: tuple[float, float], side: int = 28, width: float = 0.15) -> torch.Tensor:
    """A smooth Gaussian bump at ``centre`` = (x, y) in [-1, 1]^2, as one flat image."""
    grid = pixel_grid(side)
    return torch.exp(-((grid - torch.tensor(centre)) ** 2).sum(-1) / (2 * width**2))[None]


def centre_of_mass(images: torch.Tensor, side: int = 28) -> torch.Tensor:
    return (images[..., None] * pixel_grid(side)).sum(-2) / images.sum(-1, keepdim=True)


pytestmark = pytest.mark.usefixtures("one_thread")


# --- rotating images -----------------------------------------------------------------------


@pytest.mark.parametrize("side", [5, 28])
def test_quarter_turns_are_rot90(side):
    torch.manual_seed(0)
    x = torch.rand(4, side * side)
    images = x.reshape(4, side, side)
    for angle, k in [(math.pi / 2, 1), (-math.pi / 2, -1), (math.pi, 2)]:
        expected = torch.rot90(images, k, dims=(-2, -1)).reshape(4, -1)
        torch.testing.assert_close(
            rotate_images(x, angle, (1, side, side)), expected, atol=1e-5, rtol=0
        )
    torch.testing.assert_close(rotate_images(x, 0.0, (1, side, side)), x)


def test_a_rotation_moves_a_blob_to_r_minus_a_p():
    """x_rot(c) = x(R(a) c): a bump at p ends up at R(-a) p (counter-clockwise as displayed,
    with rows running downwards)."""
    p = torch.tensor([0.4, -0.2])
    angles = torch.tensor([0.3, 1.1, -2.0])
    rotated = rotate_images(blob(tuple(p.tolist())).expand(3, -1), angles)
    cos, sin = torch.cos(angles), torch.sin(angles)
    expected = torch.stack([cos * p[0] + sin * p[1], -sin * p[0] + cos * p[1]], -1)  # R(-a) p
    torch.testing.assert_close(centre_of_mass(rotated), expected, atol=2e-3, rtol=0)


def test_rotating_there_and_back_is_nearly_the_identity():
    """Up to two bilinear interpolations of a smooth image (bumps of about 4 pixels), inside
    the disc that no rotation moves out of the square."""
    x = blob((0.3, -0.25), width=0.3) + 0.6 * blob((-0.2, 0.35), width=0.35)
    disc = pixel_grid(28).norm(dim=-1) <= 0.95
    for angle in (0.4, 1.3, -2.9):
        back = rotate_images(rotate_images(x, angle), -angle)
        assert (back - x)[:, disc].abs().max() < 0.03
    assert (rotate_images(x, 0.4) - x).abs().max() > 0.25  # the test can see a rotation


# --- the coordinate decoder ----------------------------------------------------------------


def test_pixel_grid_and_pose_match_affine_grid():
    """The model's pixel coordinates are rotate_images' (affine_grid's) and c' = R c + dx is
    the affine map [R | dx]: the model's pose means what the data's rotation means."""
    torch.manual_seed(0)
    theta, dx = torch.randn(5, 1), 0.3 * torch.randn(5, 2)
    affine = torch.cat([rotation_matrices(theta[:, 0]), dx[:, :, None]], -1)
    grid = F.affine_grid(affine, [5, 1, 7, 7], align_corners=ALIGN_CORNERS).reshape(5, -1, 2)
    torch.testing.assert_close(transform_coordinates(pixel_grid(7), theta, dx), grid)
    identity = F.affine_grid(torch.eye(2, 3)[None], [1, 1, 7, 7], align_corners=ALIGN_CORNERS)
    torch.testing.assert_close(pixel_grid(7), identity.reshape(-1, 2))
    torch.testing.assert_close(transform_coordinates(pixel_grid(7), None, None), pixel_grid(7))


def test_decoding_at_a_quarter_turn_is_rot90():
    vae = small_vae(side=28, hidden=(16, 16))
    z = torch.randn(3, vae.z_dim)
    upright = vae.decode(z).reshape(3, 28, 28)
    for angle, k in [(math.pi / 2, 1), (-math.pi / 2, -1)]:
        turned = vae.decode(z, theta=angle).reshape(3, 28, 28)
        torch.testing.assert_close(turned, torch.rot90(upright, k, dims=(-2, -1)))


def test_decoding_at_an_angle_renders_the_rotated_image():
    """decode(z, theta) = rotate_images(decode(z, 0), theta) up to bilinear interpolation, on
    the pixels whose rotated coordinates stay inside the square."""
    vae = small_vae(side=28, hidden=(16, 16))
    with torch.no_grad():  # a smooth image: small weights on the coordinates
        vae.decoder.coord.weight.mul_(0.5)
    z = torch.randn(4, vae.z_dim)
    upright = vae.decode(z)
    for angle in (0.5, -1.2, 2.5):
        inside = transform_coordinates(pixel_grid(28), torch.tensor([angle]), None)
        inside = inside.abs().amax(-1) <= 1
        rendered, rotated = vae.decode(z, theta=angle), rotate_images(upright, angle)
        error = (rendered - rotated)[:, inside].abs().max()
        assert error < 0.01, (angle, error)
        assert (vae.decode(z, theta=-angle) - rotated)[:, inside].abs().max() > 10 * error


def test_decoding_shifted_by_one_pixel_moves_the_picture_one_pixel():
    """c' = c + dx: dx = (+step, 0) reads the pixel to the right (the picture moves left)."""
    vae = small_vae(side=9)
    z = torch.randn(2, vae.z_dim)
    step = 2 / (9 - 1)
    image = vae.decode(z).reshape(2, 9, 9)
    right = vae.decode(z, dx=torch.tensor([step, 0.0])).reshape(2, 9, 9)
    down = vae.decode(z, dx=torch.tensor([0.0, step])).reshape(2, 9, 9)
    torch.testing.assert_close(right[:, :, :-1], image[:, :, 1:])
    torch.testing.assert_close(down[:, :-1, :], image[:, 1:, :])


def test_the_code_enters_the_first_layer_once_per_image():
    vae = small_vae(side=10)
    shapes = []
    vae.decoder.latent.register_forward_hook(lambda m, args, out: shapes.append(args[0].shape))
    vae.decoder(torch.randn(5, vae.z_dim), torch.randn(5, 1), torch.randn(5, 2))
    assert shapes == [torch.Size([5, vae.z_dim])]


def test_decode_takes_one_pose_or_one_per_code():
    vae = small_vae()
    z = torch.randn(3, vae.z_dim)
    theta, dx = torch.tensor([0.1, -0.4, 2.0]), torch.randn(3, 2)
    each = vae.decode(z, theta=theta, dx=dx)
    for i in range(3):
        one = vae.decode(z[i : i + 1], theta=float(theta[i]), dx=dx[i])
        torch.testing.assert_close(each[i : i + 1], one)
    logits = vae.decode(z, kind="params")
    torch.testing.assert_close(torch.sigmoid(logits), vae.decode(z))
    assert vae.decode(z, kind="distribution").event_shape == (SIDE * SIDE,)
    with pytest.raises(ValueError, match="z must have shape"):
        vae.decode(torch.randn(3, vae.z_dim + 1))


# --- the Pyro program against the hand-written loss -----------------------------------------


def assert_same_loss_and_gradients(vae: InvariantVAE, elbo: object, x: torch.Tensor) -> None:
    """Pyro's loss and the hand-written one at the same sample: equal in value and in the
    gradient of every parameter, to 1e-9."""
    pyro_loss, ref_loss = pyro_and_invariant_reference_loss(vae, elbo, x)
    torch.testing.assert_close(pyro_loss, ref_loss, rtol=1e-9, atol=1e-9)
    params = [p for p in vae.parameters() if p.requires_grad]
    pyro_grads = torch.autograd.grad(pyro_loss, params, allow_unused=True)
    ref_grads = torch.autograd.grad(ref_loss, params, allow_unused=True)
    for (name, _), g_pyro, g_ref in zip(vae.named_parameters(), pyro_grads, ref_grads, strict=True):
        assert g_pyro is not None and g_ref is not None, name
        torch.testing.assert_close(g_pyro, g_ref, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("elbo_class", [Trace_ELBO, TraceMeanField_ELBO])
@pytest.mark.parametrize("likelihood,invariances", CASES)
def test_pyro_elbo_equals_the_hand_written_loss(float64, likelihood, invariances, elbo_class, beta):
    vae = small_vae(likelihood=likelihood, invariances=invariances, beta=beta)
    assert_same_loss_and_gradients(vae, elbo_class(), some_images(likelihood))


@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize("elbo_class", [MonteCarloELBO, MeanFieldELBO])
def test_sync_free_twins_equal_the_hand_written_loss(float64, elbo_class, particles):
    """The trainer's vectorised estimators, K particles at once (latents of shape (K, N, .))."""
    vae, x = small_vae(beta=0.5), some_images("bernoulli")
    assert_same_loss_and_gradients(vae, elbo_class(num_particles=particles), x)


def test_the_reference_refuses_what_it_cannot_replay():
    vae, x = small_vae(), some_images("bernoulli")
    with pytest.raises(MissingReference, match="num_particles=1"):
        pyro_and_invariant_reference_loss(vae, Trace_ELBO(num_particles=2), x)
    with pytest.raises(MissingReference, match="TraceGraph_ELBO"):
        pyro_and_invariant_reference_loss(vae, TraceGraph_ELBO(), x)


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_beta_weights_every_latent_site_in_model_and_guide(beta):
    vae = small_vae(beta=beta)
    x = (torch.rand(4, SIDE * SIDE) < 0.5).float()
    guide = poutine.trace(vae.guide).get_trace(x)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    for trace in (guide, model):
        for site in ("z", "theta", "dx"):
            node = trace.nodes[site]
            if beta == 0:
                assert node["mask"] is False, site
            else:
                assert node["scale"] == beta, site
    assert model.nodes["x"]["scale"] == 1.0 and model.nodes["x"]["mask"] is None
    assert guide.nodes["_RETURN"]["value"][1] is guide.nodes["theta"]["value"]


def test_guide_and_model_sites_follow_the_invariances():
    x = (torch.rand(2, SIDE * SIDE) < 0.5).float()
    for invariances, sites in [
        ("rotation", {"z", "theta"}),
        (("translation",), {"z", "dx"}),
        ("none", {"z"}),
    ]:
        vae = small_vae(invariances=invariances)
        trace = poutine.trace(vae.guide).get_trace(x)
        latent = {n for n, s in trace.nodes.items() if s["type"] == "sample" and n != "data"}
        assert latent == sites and set(vae.latent_sites) == sites
        assert trace.nodes["_RETURN"]["value"][0].shape == (2, 3)


# --- encode, pose, reconstruct, sample ---------------------------------------------------------


def test_encode_and_pose_are_the_posterior_means():
    vae = small_vae()
    x = (torch.rand(4, SIDE * SIDE) < 0.5).float()
    loc, _ = vae.encoder(x)
    theta, dx = vae.pose(x)
    torch.testing.assert_close(vae.encode(x), loc[:, :3])
    torch.testing.assert_close(theta, loc[:, 3])
    torch.testing.assert_close(dx, loc[:, 4:6])
    torch.testing.assert_close(
        vae.reconstruct(x), vae.decode(loc[:, :3], theta=theta, dx=dx), msg="reconstruct"
    )
    rotation_only = small_vae(invariances="rotation")
    theta, dx = rotation_only.pose(x)
    assert theta.shape == (4,) and torch.equal(dx, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="batch of rows"):
        vae.pose(x[0])


def test_samples_are_decoded_prior_draws():
    vae = small_vae()
    torch.manual_seed(3)
    canonical = vae.sample(5, canonical=True)
    torch.manual_seed(3)
    torch.testing.assert_close(canonical, vae.decode(vae.prior().sample((5,))))
    posed = vae.sample(5)
    assert posed.shape == (5, SIDE * SIDE) and ((posed > 0) & (posed < 1)).all()


# --- the builder --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,options,error,message",
    [
        ((3, 28, 28), {}, ValueError, "square single-channel"),
        ((1, 28, 20), {}, ValueError, "square single-channel"),
        ((784,), {}, ValueError, "square single-channel"),
        ((1, 28, 28), {"likelihood": "beta"}, ValueError, "one value per pixel"),
        ((1, 28, 28), {"invariances": ("rotation", "scale")}, ValueError, "unknown invariance"),
        ((1, 28, 28), {"invariances": "rotation+shear"}, ValueError, "unknown invariance"),
        ((1, 28, 28), {"theta_prior": 0.0}, ValueError, "theta_prior"),
        ((1, 28, 28), {"dx_prior": -1.0}, ValueError, "dx_prior"),
        ((1, 28, 28), {"prior": "mixture"}, ValueError, "normal prior"),
        ((1, 28, 28), {"hidden": ()}, ValueError, "hidden layer"),
        ((1, 28, 28), {"hiden": (4,)}, OptionError, "hiden"),
        ((1, 28, 28), {"sigma": 0.2}, OptionError, "sigma"),
    ],
)
def test_builder_refuses_what_does_not_fit(shape, options, error, message):
    with pytest.raises(error, match=message):
        build_invariant_vae(shape, hidden=options.pop("hidden", (4,)), **options)


def test_builder_takes_two_dim_shapes_and_likelihood_options():
    vae = build_invariant_vae((10, 10), likelihood="gaussian", sigma=0.3, hidden=(4,))
    assert vae.likelihood.sigma == 0.3 and vae.decoder.grid.shape == (100, 2)
    assert vae.invariances == ("rotation", "translation")
    assert vae.theta_prior == pytest.approx(math.pi) and vae.dx_prior == 0.1
    assert build_invariant_vae((1, 4, 4), hidden=(4,), invariances="none").invariances == ()


# --- the rotated dataset ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rotated():
    return rotated_mnist_sample(seed=0)


def test_rotated_sample_is_seeded_and_its_angles_are_known(rotated):
    base = load_dataset("mnist-sample")
    d = rotated.data.validate()
    assert d.name == "mnist-rotated" and d.shape == (1, 28, 28)
    assert torch.equal(d.train_y, base.train_y) and torch.equal(d.test_y, base.test_y)
    assert rotated.train_angles.shape == (4000,) and rotated.test_angles.shape == (1000,)
    angles = torch.cat([rotated.train_angles, rotated.test_angles])
    assert angles.abs().max() <= math.pi and angles.min() < -3 and angles.max() > 3
    assert 0 <= d.train_x.min() and d.train_x.max() <= 1
    for split in ("train", "test"):
        x, a = getattr(base, f"{split}_x")[:20], getattr(rotated, f"{split}_angles")[:20]
        torch.testing.assert_close(getattr(d, f"{split}_x")[:20], rotate_images(x, a).clamp(0, 1))
    again = rotated_mnist_sample(seed=0)
    assert torch.equal(again.data.train_x, d.train_x)
    assert torch.equal(again.test_angles, rotated.test_angles)
    other = rotated_mnist_sample(seed=1, max_angle=0.3)
    assert not torch.equal(other.train_angles[:10], rotated.train_angles[:10] * 0.3 / math.pi)
    assert other.train_angles.abs().max() <= 0.3 and other.train_angles.abs().max() > 0.29


def test_unrotated_sample_is_mnist_sample():
    base, flat = load_dataset("mnist-sample"), rotated_mnist_sample(max_angle=0.0)
    torch.testing.assert_close(flat.data.train_x, base.train_x, atol=1e-5, rtol=0)
    with pytest.raises(DataError, match="max_angle"):
        rotated_mnist_sample(max_angle=-1.0)


# --- training -----------------------------------------------------------------------------------


def test_a_short_training_run_lowers_the_loss(rotated):
    """150 SVI steps on 64 rotated digits (14 x 14, binarised): the mean loss of the last 20
    steps is below 3/4 of the first 20's (about 100 -> 65 nats per image)."""
    x = rotated.data.train_x[::50][:64].reshape(-1, 1, 28, 28)
    x = (F.avg_pool2d(x, 2).reshape(64, -1) > 0.4).float()
    torch.manual_seed(0)
    vae = build_invariant_vae((1, 14, 14), hidden=(32, 32), z_dim=2)
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x) / len(x) for _ in range(150)]
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.75 * first, (first, last)
    theta, _ = vae.pose(x)
    assert torch.isfinite(theta).all()
    assert {"encoder", "decoder"} <= {k.split("$$$")[0] for k in pyro.get_param_store().keys()}
