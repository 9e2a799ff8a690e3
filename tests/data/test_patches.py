"""The ``image-patches`` dataset: 32x32 RGB crops of scikit-learn's two sample photographs, 8-bit
values, the same on every call, a test set cut from a region no training patch touches, and
rows laid out channels-first."""

from __future__ import annotations

import pytest
import torch

from pyro_vae.data import DATASETS
from pyro_vae.data.patches import PATCH, cut_patches, patch_corners, sample_photos


@pytest.fixture(scope="module")
def patches():
    return DATASETS.create("image-patches").validate()


def test_shapes_and_labels(patches):
    assert patches.shape == (3, 32, 32) and patches.name == "image-patches"
    assert patches.train_x.shape == (6000, 3 * 32 * 32) and patches.test_x.shape == (1000, 3072)
    assert patches.train_x.dtype == torch.float32
    assert patches.train_y.tolist().count(0) == patches.train_y.tolist().count(1) == 3000
    assert sorted(set(patches.test_y.tolist())) == [0, 1] and int(patches.test_y.sum()) == 500
    # both photographs early on: the rows are shuffled, not one photograph after the other
    assert set(patches.train_y[:20].tolist()) == {0, 1}


def test_values_are_8_bit_levels(patches):
    for x in (patches.train_x, patches.test_x):
        levels = x * 255
        assert float(x.min()) >= 0 and float(x.max()) <= 1
        torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    assert len(torch.unique((patches.train_x * 255).round())) > 200  # natural images, many levels


def test_the_same_on_every_call(patches):
    again = DATASETS.create("image-patches")
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(again, name), getattr(patches, name)), name


def test_test_patches_come_from_a_region_no_training_patch_touches(patches):
    train, test = patch_corners()
    assert int((train[:, 2] + PATCH).max()) <= 480 <= int(test[:, 2].min())
    assert int((test[:, 2] + PATCH).max()) <= 640 and int((train[:, 1] + PATCH).max()) <= 427
    seen = {bytes(row.numpy()) for row in (patches.train_x * 255).round().to(torch.uint8)}
    assert not any(
        bytes(row.numpy()) in seen for row in (patches.test_x * 255).round().to(torch.uint8)
    )


def test_rows_are_the_photographs_pixels_channels_first(patches):
    from sklearn.datasets import load_sample_images

    found = load_sample_images()
    photos = {p.rsplit("/", 1)[-1]: im for p, im in zip(found.filenames, found.images, strict=True)}
    train, test = patch_corners()
    for rows, corners in ((patches.train_x, train), (patches.test_x, test)):
        for i in (0, 7):
            label, top, left = corners[i].tolist()
            source = photos[("china.jpg", "flower.jpg")[label]]
            crop = source[top : top + 32, left : left + 32]  # (32, 32, 3), RGB
            image = (rows[i] * 255).round().to(torch.uint8).reshape(3, 32, 32)
            for channel in range(3):  # plane c of the row is colour c of the photograph
                assert torch.equal(image[channel], torch.from_numpy(crop[:, :, channel].copy()))
    assert torch.equal(patches.train_y, train[:, 0]) and torch.equal(patches.test_y, test[:, 0])


def test_cut_patches_reads_the_given_corners():
    photos = sample_photos()
    corner = torch.tensor([[1, 395, 608]])  # the bottom-right patch of flower.jpg
    row = cut_patches(photos, corner).reshape(3, 32, 32)
    expected = photos[1, 395:, 608:].permute(2, 0, 1).float() / 255
    torch.testing.assert_close(row, expected, rtol=0, atol=0)
