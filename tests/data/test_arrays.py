"""Arrays by path: .npy memory-mapped, .npz and HDF5; NCHW and NHWC told apart or asked for;
the split by a seeded fraction; the record; the values' kind; sizes of the memory budget."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from pyro_vae.data import DataError
from pyro_vae.data.sources import materialize, open_source, parse_size, split_source
from pyro_vae.data.sources.rows import image_layout


def _images(n: int = 12, shape=(3, 32, 32)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_npy_is_memory_mapped_and_reads_rows_in_the_order_asked(tmp_path):
    x = _images()
    np.save(tmp_path / "x.npy", x)
    source = open_source(tmp_path / "x.npy")
    assert isinstance(source.train.array, np.memmap)
    assert source.shape == (3, 32, 32) and source.values == "8-bit"
    np.testing.assert_array_equal(source.train.read(np.array([5, 0, 5])), x[[5, 0, 5]])


def test_channels_last_images_come_back_channels_first(tmp_path):
    nchw = _images()
    np.savez(
        tmp_path / "x.npz",
        train_x=nchw.transpose(0, 2, 3, 1),
        test_x=nchw[:3].transpose(0, 2, 3, 1),
    )
    source = open_source(tmp_path / "x.npz")
    assert source.facts["layout"] == "nhwc" and source.shape == (3, 32, 32)
    np.testing.assert_array_equal(source.train.read(np.arange(12)), nchw)
    data = materialize(split_source(source, 0.5, 0))
    torch.testing.assert_close(data.train_x, torch.as_tensor(nchw).reshape(12, -1).float() / 255)
    assert data.shape == (3, 32, 32) and len(data.test_x) == 3  # the file's own split


@pytest.mark.parametrize(
    ("shape", "layout", "want"),
    [((28, 28), "auto", ((1, 28, 28), "nchw")),
     ((3, 32, 32), "auto", ((3, 32, 32), "nchw")),
     ((32, 32, 3), "auto", ((3, 32, 32), "nhwc")),
     ((784,), "auto", ((784,), "flat")),
     ((4, 4, 4), "nhwc", ((4, 4, 4), "nhwc"))],
)  # fmt: skip
def test_layouts_that_only_one_reading_fits(shape, layout, want):
    assert image_layout(shape, layout, "x") == want


@pytest.mark.parametrize("shape", [(4, 4, 4), (3, 8, 3), (1, 2, 3, 4)])
def test_an_ambiguous_layout_is_asked_for_never_guessed(shape):
    with pytest.raises(DataError, match="--layout nchw or --layout nhwc|give images"):
        image_layout(shape, "auto", "x")


def test_hdf5_datasets_by_key_with_labels(tmp_path):
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["group/x"], f["y"], f["other"] = x, np.arange(20) % 4, np.zeros((20, 2))
    with pytest.raises(DataError, match="name the rows with --data-key"):
        open_source(tmp_path / "d.h5")
    source = open_source(tmp_path / "d.h5", data_key="group/x")
    assert source.values == "real" and source.facts["key"] == "group/x"
    np.testing.assert_array_equal(source.train.read(np.array([19, 2])), x[[19, 2]])
    np.testing.assert_array_equal(source.train_labels, np.arange(20) % 4)
    with pytest.raises(DataError, match="has no array 'nope'"):
        open_source(tmp_path / "d.h5", data_key="nope")


def test_the_split_is_seeded_disjoint_and_recorded(tmp_path):
    x = np.arange(100, dtype=np.int32).reshape(100, 1)
    np.save(tmp_path / "c.npy", x)
    a = split_source(open_source(tmp_path / "c.npy"), 0.2, seed=7)
    b = split_source(open_source(tmp_path / "c.npy"), 0.2, seed=7)
    c = split_source(open_source(tmp_path / "c.npy"), 0.2, seed=8)
    test = set(a.test.all_rows().ravel())
    assert len(test) == 20 and not test & set(a.train.all_rows().ravel())
    assert test == set(b.test.all_rows().ravel()) != set(c.test.all_rows().ravel())
    record = a.record()
    assert record["split"] == {"from": "test_fraction", "test_fraction": 0.2, "seed": 7}
    assert (record["train"], record["test"], record["values"]) == (80, 20, "counts")


def test_integer_counts_are_never_rescaled(tmp_path):
    counts = np.array([[0, 7, 200], [3, 1, 0]], dtype=np.uint8)
    np.savez(tmp_path / "c.npz", train_x=counts, test_x=counts)
    source = split_source(open_source(tmp_path / "c.npz"), 0.5, 0)
    assert materialize(source, counts=True).train_x.max() == 200
    assert materialize(source, counts=False).train_x.max() == pytest.approx(200 / 255)


@pytest.mark.parametrize(
    ("path", "message"),
    [("missing.npy", "does not exist"), ("data.xyz", "not a kind of data pyro-vae reads")],
)
def test_paths_that_cannot_be_read_are_one_line(tmp_path, path, message):
    if path.endswith(".xyz"):
        (tmp_path / path).write_text("1,2,3")
    with pytest.raises(DataError, match=message):
        open_source(tmp_path / path)


def test_a_corrupt_npy_is_named(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="npy: cannot read .*bad.npy"):
        open_source(tmp_path / "bad.npy")


@pytest.mark.parametrize(
    ("text", "size"), [("2G", 2 << 30), ("500M", 500 << 20), ("1.5GB", 3 << 29), ("4096", 4096)]
)
def test_sizes_of_the_memory_budget(text, size):
    assert parse_size(text) == size
