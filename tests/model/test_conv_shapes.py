"""The conv networks for (C, H, W) images with 1 to 4 channels and sides of 28 to 64 pixels: the
shapes they map, the sizes they refuse, the 28x28 pair kept layer for layer (so earlier runs'
checkpoints load and their numbers repeat), the layout of a likelihood with two parameters
per pixel, and gradients reaching every layer."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_vae import build_vae
from pyro_vae.model import NetworkShapeError
from pyro_vae.model.nets import conv_networks

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 45, 33), (4, 40, 40)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("per_pixel", [1, 2])
def test_the_pair_maps_rows_to_the_shapes_a_vae_needs(shape, per_pixel):
    encoder, decoder = conv_networks(shape, 5, per_pixel)
    dim = math.prod(shape)
    loc, scale = encoder(torch.rand(3, dim))
    assert loc.shape == scale.shape == (3, 5) and bool((scale > 0).all())
    assert encoder.features(torch.rand(2, 3, dim)).shape == (2, 3, encoder.feature_dim)
    assert decoder(loc).shape == (3, per_pixel * dim)
    # particle dimensions on the left pass through (vectorised estimators need this)
    assert decoder(torch.randn(2, 3, 5)).shape == (2, 3, per_pixel * dim)


def test_a_bigger_image_gets_a_third_stage():
    def convs(shape):
        encoder, decoder = conv_networks(shape, 5)
        down = [m for m in encoder.body if isinstance(m, torch.nn.Conv2d)]
        up = [m for m in decoder.net if isinstance(m, torch.nn.ConvTranspose2d)]
        return [(m.in_channels, m.out_channels) for m in down], [
            (m.in_channels, m.out_channels, m.output_padding) for m in up
        ]

    assert convs((3, 32, 32)) == ([(3, 32), (32, 64)], [(64, 32, (0, 0)), (32, 3, (0, 0))])
    assert convs((3, 64, 64))[0] == [(3, 32), (32, 64), (64, 128)]
    # odd sides are restored by output padding: 45 -> 22 -> 11 -> 22 -> 45, 33 -> 16 -> 8 -> ...
    assert convs((1, 45, 33))[1] == [(64, 32, (0, 0)), (32, 1, (1, 1))]


@pytest.mark.parametrize(
    "shape", [(1, 16, 16), (3, 100, 100), (1, 28, 100), (5, 32, 32), (784,), (2, 1, 28, 28)]
)
def test_other_sizes_are_refused_in_one_line(shape):
    with pytest.raises(NetworkShapeError, match=r"1 to 4 channels and sides of 28 to 64") as err:
        build_vae(shape, network="conv")
    assert "\n" not in str(err.value) and "--network mlp" in str(err.value)


def test_the_28x28_pair_is_unchanged():
    """Parameter names, shapes and count as before the networks took other sizes, so a
    checkpoint of an earlier run loads; and a seeded build draws the same initial weights in
    the same order as the layers written out as they were."""
    encoder, decoder = conv_networks((1, 28, 28), 16, 2)
    assert [(n, tuple(p.shape)) for n, p in encoder.named_parameters()] == [
        ("body.1.weight", (32, 1, 4, 4)), ("body.1.bias", (32,)),
        ("body.3.weight", (64, 32, 4, 4)), ("body.3.bias", (64,)),
        ("body.6.weight", (256, 3136)), ("body.6.bias", (256,)),
        ("head.linear.weight", (32, 256)), ("head.linear.bias", (32,)),
    ]  # fmt: skip
    assert [(n, tuple(p.shape)) for n, p in decoder.named_parameters()] == [
        ("net.0.weight", (256, 16)), ("net.0.bias", (256,)),
        ("net.2.weight", (3136, 256)), ("net.2.bias", (3136,)),
        ("net.5.weight", (64, 32, 4, 4)), ("net.5.bias", (32,)),
        ("net.7.weight", (32, 2, 4, 4)), ("net.7.bias", (2,)),
    ]  # fmt: skip
    assert sum(p.numel() for p in encoder.parameters()) == 844_672
    assert sum(p.numel() for p in decoder.parameters()) == 844_130
    one = conv_networks((28, 28), 16)[1]  # an (H, W) shape is one channel
    assert sum(p.numel() for p in one.parameters()) == 843_617
    torch.manual_seed(0)
    now = [net.state_dict() for net in conv_networks((1, 28, 28), 16, 2)]
    torch.manual_seed(0)
    before = [net.state_dict() for net in _the_28x28_pair_as_it_was(16, 2)]
    for new, old in zip(now, before, strict=True):
        assert list(new) == list(old)
        for name in new:
            assert torch.equal(new[name], old[name]), name


def _the_28x28_pair_as_it_was(z_dim, per_pixel):
    """The layers of the 28x28 pair, written out as they were when it took no other size."""
    nn = torch.nn
    encoder = nn.Module()
    encoder.body = nn.Sequential(
        nn.Unflatten(-1, (1, 28, 28)),
        nn.Conv2d(1, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 256), nn.ReLU(),
    )  # fmt: skip
    encoder.head = nn.Module()
    encoder.head.linear = nn.Linear(256, 2 * z_dim)
    decoder = nn.Module()
    decoder.net = nn.Sequential(
        nn.Linear(z_dim, 256), nn.ReLU(), nn.Linear(256, 64 * 7 * 7), nn.ReLU(),
        nn.Unflatten(-1, (64, 7, 7)),
        nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(32, per_pixel, 4, stride=2, padding=1), nn.Flatten(),
    )  # fmt: skip
    return encoder, decoder


def test_two_parameters_per_pixel_come_in_the_likelihoods_layout():
    """Output channel j * C + c is parameter j of channel c: flattened, all first parameters
    over (C, H, W), then all second ones, which is how the beta likelihood splits them."""
    shape = (3, 32, 32)
    vae = build_vae(shape, network="conv", likelihood="beta", z_dim=4)
    last = vae.decoder.net[-2]
    assert isinstance(last, torch.nn.ConvTranspose2d) and last.out_channels == 6
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 1.0, 2.0, 10.0, 11.0, 12.0]))
    out = vae.decoder(torch.randn(2, 4))
    a, b = vae.likelihood.concentrations(out)
    channel = torch.tensor([0.0, 1.0, 2.0]).reshape(3, 1, 1).expand(shape)
    soft = torch.nn.functional.softplus
    torch.testing.assert_close(a, (soft(channel) + 1e-3).reshape(1, -1).expand(2, -1))
    torch.testing.assert_close(b, (soft(channel + 10) + 1e-3).reshape(1, -1).expand(2, -1))


@pytest.mark.parametrize("shape", [(3, 64, 64), (1, 45, 33)], ids=["64", "45x33"])
def test_gradients_reach_every_layer(shape):
    torch.manual_seed(0)
    vae = build_vae(shape, network="conv", likelihood="gaussian", z_dim=4)
    x = torch.rand(4, math.prod(shape))
    loc, scale = vae.encoder(x)
    z = loc + scale * torch.randn_like(scale)
    loss = -vae.likelihood(vae.decoder(z)).log_prob(x).sum() + (loc**2 + scale**2).sum()
    loss.backward()
    for name, p in vae.named_parameters():
        if name.startswith(("encoder", "decoder")):
            assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
