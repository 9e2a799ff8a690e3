from __future__ import annotations

import gzip
import struct

import pytest
import torch

from pyro_vae.data import DATASETS, Binarizer, DataError, ImageData, load_dataset, read_idx_dir
from pyro_vae.registry import UnknownNameError


def test_mnist_sample_split_is_fixed_and_balanced(mnist_sample):
    d = mnist_sample
    assert d.train_x.shape == (4000, 784) and d.test_x.shape == (1000, 784)
    assert d.shape == (1, 28, 28)
    assert torch.bincount(d.train_y).tolist() == [400] * 10
    assert torch.bincount(d.test_y).tolist() == [100] * 10
    assert float(d.train_x.min()) == 0.0 and float(d.train_x.max()) == 1.0
    # real digits: about 19% of MNIST pixels are non-zero, and grey levels are present
    assert 0.15 < float((d.train_x > 0).float().mean()) < 0.25
    assert len(torch.unique(d.train_x)) > 200
    # the split is by file order within each digit; no image is in both sets
    train_rows = {tuple(r.tolist()) for r in (d.train_x[:400] * 255).round().byte()}
    test_rows = {tuple(r.tolist()) for r in (d.test_x[:100] * 255).round().byte()}
    assert not train_rows & test_rows


def test_binarization_modes(mnist_sample):
    data = ImageData(
        mnist_sample.train_x[:200],
        mnist_sample.train_y[:200],
        mnist_sample.test_x[:100],
        mnist_sample.test_y[:100],
    )
    dynamic = Binarizer("dynamic", data, seed=0)
    a, b = dynamic.train_x(), dynamic.train_x()
    assert set(torch.unique(a).tolist()) == {0.0, 1.0}
    assert not torch.equal(a, b)  # a fresh draw every epoch
    # the binarised image is a draw from Bernoulli(grey level): same mean, roughly
    assert abs(float(a.mean() - data.train_x.mean())) < 0.01
    static = Binarizer("static", data, seed=0)
    assert torch.equal(static.train_x(), static.train_x())
    # the test set does not depend on the run's seed
    assert torch.equal(Binarizer("dynamic", data, seed=1).test_x, dynamic.test_x)
    assert torch.equal(Binarizer("static", data, seed=5).test_x, dynamic.test_x)
    none = Binarizer("none", data, seed=0)
    assert torch.equal(none.train_x(), data.train_x)
    with pytest.raises(DataError, match="dynamic"):
        Binarizer("threshold", data, seed=0)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
@pytest.mark.parametrize("where", ["train", "test"])
def test_binarizing_data_outside_0_1_is_one_line_naming_the_fix(mnist_sample, mode, where):
    """Counts (or real values) binarized by Bernoulli(x): refused before any draw, in one line
    that names the span and the fix, whichever split holds them."""
    train, test = mnist_sample.train_x[:50].clone(), mnist_sample.test_x[:20].clone()
    (train if where == "train" else test)[3, 7] = 37.0  # a count
    data = ImageData(train, mnist_sample.train_y[:50], test, mnist_sample.test_y[:20])
    with pytest.raises(DataError) as error:
        Binarizer(mode, data, seed=0)
    message = str(error.value)
    split = {"train": "training", "test": "test"}[where]
    assert "\n" not in message and f"the {split} data spans [0, 37]" in message
    assert "--binarize none" in message
    Binarizer("none", data, seed=0)  # kept as they are: the likelihood then checks them


def _write_idx(path, array: torch.Tensor, packed: bool) -> None:
    dims = array.shape
    header = struct.pack(">I", 0x0800 + len(dims)) + b"".join(struct.pack(">I", n) for n in dims)
    payload = header + array.to(torch.uint8).numpy().tobytes()
    if packed:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


@pytest.mark.parametrize("packed", [True, False])
def test_idx_directory_reader(tmp_path, monkeypatch, packed):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (6, 28, 28), generator=g)
    test = torch.randint(0, 256, (3, 28, 28), generator=g)
    _write_idx(tmp_path / "train-images-idx3-ubyte", train, packed)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", torch.arange(6), packed)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", test, packed)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", torch.tensor([7, 8, 9]), packed)
    d = read_idx_dir(tmp_path, "fashion-mnist")
    assert d.train_x.shape == (6, 784) and d.test_x.shape == (3, 784)
    torch.testing.assert_close(d.train_x[2], train[2].flatten().float() / 255)
    assert d.test_y.tolist() == [7, 8, 9]
    # the same directory through the registry
    assert torch.equal(load_dataset("fashion-mnist", str(tmp_path)).test_x, d.test_x)


def test_missing_or_broken_data_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_idx_dir(tmp_path / "nowhere", "mnist")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        read_idx_dir(tmp_path, "mnist")
    for stem in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]:
        (tmp_path / stem).write_bytes(b"not an idx file")
    with pytest.raises(DataError, match="cannot read"):
        read_idx_dir(tmp_path, "mnist")


def test_unknown_dataset():
    assert {"mnist-sample", "fashion-mnist", "mnist"} <= set(DATASETS.names())
    with pytest.raises(UnknownNameError, match="mnist-sample"):
        load_dataset("cifar")


def test_npz_dataset(tmp_path):
    import numpy as np

    path = tmp_path / "mine.npz"
    train = np.arange(2 * 5 * 6, dtype=np.uint8).reshape(2, 5, 6)
    np.savez(
        path, train_x=train, test_x=np.full((3, 5, 6), 0.25, np.float32), train_y=np.array([4, 2])
    )
    d = load_dataset("npz", str(path))
    assert d.shape == (1, 5, 6) and d.train_x.shape == (2, 30) and d.test_x.shape == (3, 30)
    torch.testing.assert_close(d.train_x[1], torch.arange(30, 60).float() / 255)
    assert float(d.test_x.max()) == 0.25  # floats are taken as they are
    assert d.train_y.tolist() == [4, 2] and d.test_y.tolist() == [0, 0, 0]
    np.savez(path, train_x=train)
    with pytest.raises(DataError, match="no test_x"):
        load_dataset("npz", str(path))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("npz", str(tmp_path / "other.npz"))
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("npz")


def test_dynamic_binarization_is_bernoulli_of_the_grey_level():
    """1[u < x] with u ~ U[0, 1) is Bernoulli(x): 0 and 1 map to themselves, and each grey
    level's frequency of ones is within 4 standard errors of the level."""
    levels = torch.tensor([0.0, 1 / 255, 0.25, 0.5, 254 / 255, 1.0])
    n = 40_000
    grey = levels.repeat(n, 1)
    data = ImageData(grey, torch.zeros(n), grey[:1], torch.zeros(1))
    draw = Binarizer("dynamic", data, seed=3).train_x()
    assert draw.dtype == grey.dtype and set(torch.unique(draw).tolist()) == {0.0, 1.0}
    assert draw[:, 0].sum() == 0 and draw[:, -1].sum() == n
    freq = draw.mean(0)
    se = (levels * (1 - levels) / n).sqrt()
    assert torch.all((freq - levels).abs()[1:-1] <= 4 * se[1:-1])
