"""The folder-of-images reader: layout, labels, splits, modes, sizes and bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import package_warnings

from pyro_vae.data.datasets import DataError
from pyro_vae.data.sources.images import ImageFileRows, image_files, open_image_folder
from pyro_vae.data.sources.source import open_source


def save(path: Path, pixels: np.ndarray, mode: str | None = None) -> np.ndarray:
    """Write ``pixels`` (H, W) or (H, W, C) uint8 as an image file; return them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels) if mode is None else Image.fromarray(pixels, mode)
    image.save(path)
    return pixels


def flat(path: Path, value: int, size: tuple[int, int] = (8, 8), rgb: bool = False) -> None:
    """An image of one value, ``size`` (width, height)."""
    shape = (size[1], size[0], 3) if rgb else (size[1], size[0])
    save(path, np.full(shape, value, dtype=np.uint8))


def noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def all_rows(source_rows) -> np.ndarray:
    return source_rows.read(np.arange(len(source_rows)))


def test_grey_folder_reads_exact_pixels_in_the_order_asked(tmp_path):
    images = [save(tmp_path / f"{i}.png", noise(i, (8, 8))) for i in range(3)]
    source = open_image_folder(tmp_path)
    assert source.format == "images" and source.values == "8-bit"
    assert source.shape == (1, 8, 8) and source.train.dtype == np.uint8
    assert len(source.train) == 3 and source.test is None and source.train_labels is None
    assert source.facts == {"mode": "L", "image_size": None, "image_fit": "crop", "skipped": 0}
    batch = source.train.read(np.array([2, 0, 2]))
    assert batch.shape == (3, 1, 8, 8) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[:, 0], np.stack([images[2], images[0], images[2]]))
    with pytest.raises(IndexError):
        source.train.read(np.array([3]))


def test_rgb_rows_are_channels_first(tmp_path):
    red = np.zeros((10, 12, 3), dtype=np.uint8)  # 10 high, 12 wide
    red[..., 0] = 255
    save(tmp_path / "a_red.png", red)
    pattern = save(tmp_path / "b_noise.png", noise(1, (10, 12, 3)))
    source = open_image_folder(tmp_path)
    assert source.facts["mode"] == "RGB" and source.shape == (3, 10, 12)
    batch = all_rows(source.train)
    assert (batch[0, 0] == 255).all() and (batch[0, 1:] == 0).all()
    np.testing.assert_array_equal(batch[1], pattern.transpose(2, 0, 1))


def test_class_folders_give_sorted_classes_and_labels(tmp_path):
    flat(tmp_path / "zebra" / "1.png", 11)
    flat(tmp_path / "zebra" / "0.PNG", 10)  # suffixes in any case
    flat(tmp_path / "zebra" / "deeper" / "2.png", 12)  # under its first-level folder
    flat(tmp_path / "ant" / "x.png", 20)
    flat(tmp_path / "ant" / ".hidden.png", 99)  # hidden files and folders are skipped
    flat(tmp_path / ".cache" / "y.png", 98)
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    source = open_image_folder(tmp_path)
    assert source.facts["classes"] == ["ant", "zebra"]
    assert source.train_labels.tolist() == [0, 1, 1, 1]
    assert source.train_labels.dtype == np.int64
    assert all_rows(source.train)[:, 0, 0, 0].tolist() == [20, 10, 11, 12]
    assert [p.name for p in image_files(tmp_path)] == ["x.png", "0.PNG", "1.png", "2.png"]


def test_train_and_test_folders_are_the_split(tmp_path):
    flat(tmp_path / "train" / "a" / "0.png", 1)
    flat(tmp_path / "train" / "b" / "0.png", 2)
    flat(tmp_path / "train" / "b" / "1.png", 3)
    flat(tmp_path / "test" / "c" / "0.png", 4)
    flat(tmp_path / "test" / "b" / "0.png", 5)
    source = open_image_folder(tmp_path)
    assert source.facts["classes"] == ["a", "b", "c"]
    assert source.train_labels.tolist() == [0, 1, 1]
    assert source.test_labels.tolist() == [1, 2]
    assert all_rows(source.train)[:, 0, 0, 0].tolist() == [1, 2, 3]
    assert all_rows(source.test)[:, 0, 0, 0].tolist() == [5, 4]
    assert source.record()["train"] == 3 and source.record()["test"] == 2


def test_train_and_test_folders_without_classes(tmp_path):
    flat(tmp_path / "train" / "0.png", 1)
    flat(tmp_path / "train" / "1.png", 2)
    flat(tmp_path / "test" / "0.png", 3)
    flat(tmp_path / "other" / "0.png", 4)  # outside the splits: not read, and said so
    with package_warnings() as caught:
        source = open_image_folder(tmp_path)
    assert len(caught) == 1 and "1 image file" in caught[0], caught
    assert source.train_labels is None and source.test_labels is None
    assert "classes" not in source.facts
    assert all_rows(source.train)[:, 0, 0, 0].tolist() == [1, 2]
    assert all_rows(source.test)[:, 0, 0, 0].tolist() == [3]


def test_classes_in_one_split_only_are_refused(tmp_path):
    flat(tmp_path / "train" / "a" / "0.png", 1)
    flat(tmp_path / "test" / "0.png", 2)
    with pytest.raises(DataError, match="both have class sub-folders"):
        open_image_folder(tmp_path)


def test_images_both_loose_and_in_class_folders_are_refused(tmp_path):
    flat(tmp_path / "loose.png", 1)
    flat(tmp_path / "cls" / "kept.png", 2)
    with pytest.raises(DataError) as err:
        open_image_folder(tmp_path)
    message = str(err.value)
    assert "loose.png" in message and "kept.png" in message and "\n" not in message


def test_mixed_sizes_need_image_size(tmp_path):
    flat(tmp_path / "a.png", 1, size=(8, 8))
    flat(tmp_path / "b.png", 2, size=(12, 10))
    with pytest.raises(DataError) as err:
        open_image_folder(tmp_path)
    message = str(err.value)
    assert "a.png" in message and "8x8" in message
    assert "b.png" in message and "12x10" in message and "--image-size" in message
    for how in ("crop", "resize"):
        source = open_image_folder(tmp_path, image_size=6, image_fit=how)
        assert source.shape == (1, 6, 6) and source.facts["image_size"] == 6
        assert source.facts["image_fit"] == how
        batch = all_rows(source.train)
        assert batch.shape == (2, 1, 6, 6)
        assert batch[:, 0, 0, 0].tolist() == [1, 2]  # a flat image stays flat


def test_crop_keeps_the_centre_and_resize_squeezes_all(tmp_path):
    wide = np.full((8, 16), 255, dtype=np.uint8)  # 16 wide: white edges, black centre 8
    wide[:, 4:12] = 0
    save(tmp_path / "wide.png", wide)
    crop = all_rows(open_image_folder(tmp_path, image_size=8, image_fit="crop").train)
    assert crop.shape == (1, 1, 8, 8) and (crop == 0).all()
    squeezed = all_rows(open_image_folder(tmp_path, image_size=8, image_fit="resize").train)
    assert squeezed.shape == (1, 1, 8, 8)
    assert (squeezed[0, 0, :, 0] == 255).all() and (squeezed[0, 0, :, 7] == 255).all()
    assert (squeezed[0, 0, :, 3:5] == 0).all()


def test_mixed_grey_and_colour(tmp_path):
    flat(tmp_path / "grey.png", 77)
    flat(tmp_path / "rgb.png", 200, rgb=True)
    with pytest.raises(DataError) as err:
        open_image_folder(tmp_path)
    message = str(err.value)
    assert "grey.png" in message and "rgb.png" in message and "--image-size" in message
    source = open_image_folder(tmp_path, image_size=8)
    assert source.facts["mode"] == "RGB" and source.shape == (3, 8, 8)
    batch = all_rows(source.train)
    assert (batch[0] == 77).all() and (batch[1] == 200).all()


def test_rgba_palette_gif_and_jpeg_are_read_as_rgb(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[...] = (10, 20, 30, 0)
    save(tmp_path / "a.png", rgba, "RGBA")
    palette = Image.new("P", (8, 8))
    palette.putpalette([0, 0, 0, 40, 50, 60] + [0] * 762)
    palette.paste(1, (0, 0, 8, 8))
    palette.save(tmp_path / "b.bmp")
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    frames[0].save(tmp_path / "c.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (8, 8), (100, 150, 200)).save(tmp_path / "d.JPEG", quality=95)
    source = open_image_folder(tmp_path)
    assert source.facts["mode"] == "RGB" and source.shape == (3, 8, 8)
    batch = all_rows(source.train).astype(int)
    assert batch[0, :, 3, 3].tolist() == [10, 20, 30]
    assert batch[1, :, 3, 3].tolist() == [40, 50, 60]
    assert batch[2, :, 3, 3].tolist() == [255, 0, 0]  # the first frame
    assert np.abs(batch[3] - np.array([100, 150, 200])[:, None, None]).max() <= 3


def test_a_corrupt_file_is_named_or_skipped_and_counted(tmp_path):
    flat(tmp_path / "a.png", 1)
    flat(tmp_path / "c.png", 3)
    bad = tmp_path / "b.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(DataError) as err:
        open_image_folder(tmp_path)
    assert str(err.value) == (
        f"images: cannot read '{bad}' (cannot identify image file): remove or replace it, "
        "or pass --skip-bad"
    )
    with package_warnings() as caught:
        source = open_image_folder(tmp_path, skip_bad=True)
    assert len(caught) == 1
    assert "skipped 1" in caught[0] and "b.png" in caught[0]
    assert source.facts["skipped"] == 1 and len(source.train) == 2
    assert all_rows(source.train)[:, 0, 0, 0].tolist() == [1, 3]


def test_a_file_truncated_after_its_header_fails_when_read(tmp_path):
    flat(tmp_path / "a.png", 1, size=(64, 64))
    broken = tmp_path / "b.png"
    save(broken, noise(0, (64, 64)))
    broken.write_bytes(broken.read_bytes()[:200])  # the header survives, the pixels do not
    source = open_image_folder(tmp_path)
    assert len(source.train) == 2
    assert source.train.read(np.array([0]))[0, 0, 0, 0] == 1
    with pytest.raises(DataError, match=f"cannot read '{broken}' .*remove or replace it"):
        source.train.read(np.array([1]))


def test_a_folder_without_images_is_refused(tmp_path):
    with pytest.raises(DataError, match="no image files"):
        open_image_folder(tmp_path)
    (tmp_path / "readme.txt").write_text("no images here")
    flat(tmp_path / ".hidden" / "x.png", 1)
    with pytest.raises(DataError, match="no image files"):
        open_image_folder(tmp_path)


def test_options_are_checked(tmp_path):
    flat(tmp_path / "a.png", 1)
    with pytest.raises(DataError, match="--image-fit"):
        open_image_folder(tmp_path, image_fit="stretch")
    with pytest.raises(DataError, match="--image-size"):
        open_image_folder(tmp_path, image_size=0)


def test_rows_pickle_and_read_the_same(tmp_path):
    for i in range(3):
        save(tmp_path / "k" / f"{i}.png", noise(i, (10, 12, 3)))
    rows = open_image_folder(tmp_path, image_size=8).train
    assert isinstance(rows, ImageFileRows)
    again = pickle.loads(pickle.dumps(rows))
    index = np.array([1, 2, 0, 1])
    np.testing.assert_array_equal(again.read(index), rows.read(index))
    assert again.item_shape == (3, 8, 8) and len(again) == 3
    subset = pickle.loads(pickle.dumps(rows.subset([2, 0])))
    np.testing.assert_array_equal(subset.read(np.array([0, 1])), rows.read(np.array([2, 0])))


def test_open_source_chooses_the_reader_for_a_folder(tmp_path):
    flat(tmp_path / "a.png", 5, size=(12, 10))
    flat(tmp_path / "b.png", 6, size=(8, 8))
    with package_warnings() as caught:
        source = open_source(tmp_path, image_size=4, image_fit="resize", test_fraction=0.5)
    assert caught == []
    assert source.format == "images" and source.shape == (1, 4, 4)
    assert source.fingerprint["files"] == 2
    assert all_rows(source.train)[:, 0, 0, 0].tolist() == [5, 6]
