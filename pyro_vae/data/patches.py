"""Natural-image patches in colour: 32x32 RGB crops of the two photographs scikit-learn ships
(``sklearn.datasets.load_sample_images``: ``china.jpg`` and ``flower.jpg``, 427x640 each), a
small offline dataset for models of (3, H, W) images. Registered as ``image-patches``.

What it holds. 6,000 training and 1,000 test patches, half from each photograph; the label is
the photograph (0 china, 1 flower). Pixels are the photographs' 8-bit values k / 255, each row
laid out channels-first, (3, 32, 32) = R plane, G plane, B plane, as the conv networks read it.

How it is cut. Each photograph is split by columns: the left three quarters (columns 0..479)
give the training patches, the right quarter (columns 480..639) the test patches. A patch lies
wholly inside its region, its top-left corner drawn uniformly from the positions that allow
that, by a generator seeded with :data:`SEED`. Random crops overlap one another, so crops of
one region would give a test set made of shifted copies of training pixels; with two disjoint
regions no test patch shares a pixel with any training patch, and the test set measures how
well a model does on parts of the scenes it has not seen. The rows of each split are then
shuffled with the same generator, so both photographs appear in any run of consecutive rows.

The same seed gives the same corners (:func:`patch_corners`); the pixels are the decoded
JPEGs, so a different JPEG decoder could change them slightly, never the corners.
"""

from __future__ import annotations

import numpy as np
import torch

from .datasets import DATASETS, DataError, ImageData

PATCH = 32  # side of a patch, in pixels
TRAIN_PER_PHOTO = 3_000
TEST_PER_PHOTO = 500
TRAIN_SHARE = 0.75  # the left share of each photograph's columns that training patches come from
SEED = 0
PHOTOS = ("china.jpg", "flower.jpg")  # label 0, label 1


def sample_photos() -> torch.Tensor:
    """The two photographs as one uint8 tensor (2, 427, 640, 3), in the order of
    :data:`PHOTOS`, RGB."""
    try:
        from sklearn.datasets import load_sample_images
    except ModuleNotFoundError:
        raise DataError("image-patches needs scikit-learn: pip install scikit-learn") from None
    found = load_sample_images()
    names = [path.replace("\\", "/").rsplit("/", 1)[-1] for path in found.filenames]
    by_name = dict(zip(names, found.images, strict=True))
    return torch.from_numpy(np.stack([by_name[name] for name in PHOTOS]))


def patch_corners(height: int = 427, width: int = 640) -> tuple[torch.Tensor, torch.Tensor]:
    """The (photograph, top, left) of every training and every test patch, in the dataset's row
    order (see the module doc): two long tensors, (6000, 3) and (1000, 3)."""
    generator = torch.Generator().manual_seed(SEED)
    split = int(width * TRAIN_SHARE)
    regions = {"train": (0, split, TRAIN_PER_PHOTO), "test": (split, width, TEST_PER_PHOTO)}
    corners = []
    for first, end, per_photo in regions.values():
        photo = torch.arange(len(PHOTOS)).repeat_interleave(per_photo)
        top = torch.randint(0, height - PATCH + 1, (photo.numel(),), generator=generator)
        left = torch.randint(first, end - PATCH + 1, (photo.numel(),), generator=generator)
        rows = torch.stack([photo, top, left], dim=1)
        corners.append(rows[torch.randperm(rows.shape[0], generator=generator)])
    return corners[0], corners[1]


def cut_patches(photos: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """Rows (N, 3 * PATCH * PATCH) of floats k / 255, channels-first, from uint8 photographs
    (P, H, W, 3) at ``corners`` (N, 3) of (photograph, top, left)."""
    offsets = torch.arange(PATCH)
    photo, top, left = corners.unbind(1)
    rows = (top[:, None] + offsets)[:, :, None]
    cols = (left[:, None] + offsets)[:, None, :]
    patches = photos[photo[:, None, None], rows, cols]  # (N, PATCH, PATCH, 3)
    return patches.permute(0, 3, 1, 2).reshape(corners.shape[0], -1).float() / 255.0


@DATASETS.register("image-patches")
def image_patches() -> ImageData:
    """6,000 training and 1,000 test 32x32 RGB patches of two photographs, from disjoint
    regions of each, labelled by photograph (see this module)."""
    photos = sample_photos()
    train, test = patch_corners(photos.shape[1], photos.shape[2])
    return ImageData(
        cut_patches(photos, train),
        train[:, 0].clone(),
        cut_patches(photos, test),
        test[:, 0].clone(),
        shape=(3, PATCH, PATCH),
        name="image-patches",
    )
