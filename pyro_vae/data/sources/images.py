"""A folder of image files (PNG, JPEG, BMP, GIF, WEBP, TIFF) as a data source.

The folder is searched recursively (hidden files and folders skipped, other files ignored) and
read in sorted order. Images that all sit in first-level sub-folders are labelled by them (the
sorted folder names are the classes); images directly in the folder have no labels. A folder
with ``train/`` and ``test/`` sub-folders gives its own split, each laid out the same way.

Opening reads only each file's header (mode and size); pixels are decoded a batch at a time
by :class:`ImageFileRows`, in ``DataLoader`` workers when the data are streamed. Images are
grey (``L``) or ``RGB``; every image must share one mode and size unless ``image_size`` is
given, which resizes each to ``image_size`` square (``image_fit``: centre-``crop`` or
``resize``) and makes a folder of grey and colour images colour.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..datasets import DataError
from .rows import Rows
from .source import DataSource, reader, warn_data

SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
IMAGE_FITS = ("crop", "resize")
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
KINDS = "PNG, JPEG, BMP, GIF, WEBP or TIFF"


@dataclass(frozen=True)
class Header:
    """What opening a file told of it: its path, ``"L"`` or ``"RGB"``, and (width, height)."""

    path: str
    mode: str
    size: tuple[int, int]


def image_files(root: Path) -> list[Path]:
    """Every image file under ``root`` (by suffix), hidden ones skipped, in sorted order."""
    found: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(
            Path(folder, n)
            for n in names
            if not n.startswith(".") and os.path.splitext(n)[1].lower() in SUFFIXES
        )
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def model_mode(mode: str) -> str:
    """The mode a PIL mode is read as: grey ``"L"`` or ``"RGB"``."""
    return "L" if mode in GREY_MODES else "RGB"


def _reason(err: Exception) -> str:
    """Why a file could not be read, in a few words (no path: the message names it)."""
    if isinstance(err, UnidentifiedImageError):
        return "cannot identify image file"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = str(err).splitlines()[0] if str(err) else ""
    return text or type(err).__name__


def _unreadable(path: str, err: Exception, skip_hint: bool) -> DataError:
    hint = ", or pass --skip-bad" if skip_hint else ""
    return DataError(f"images: cannot read '{path}' ({_reason(err)}): remove or replace it{hint}")


def read_header(path: str) -> Header:
    """The file's mode and size, from its header (no pixels decoded)."""
    with Image.open(path) as im:
        return Header(path, model_mode(im.mode), (int(im.width), int(im.height)))


def scan(files: list[Path], skip_bad: bool) -> tuple[list[Header], list[tuple[str, str]]]:
    """The headers of ``files`` and the (path, reason) of those that cannot be opened: kept
    aside with ``skip_bad``, else the first one is an error."""
    headers, bad = [], []
    for p in files:
        try:
            headers.append(read_header(str(p)))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            if not skip_bad:
                raise _unreadable(str(p), err, skip_hint=True) from None
            bad.append((str(p), _reason(err)))
    return headers, bad


def convert(im: Image.Image, mode: str) -> Image.Image:
    """``im`` as ``mode`` (``"L"`` or ``"RGB"``): alpha dropped, palettes expanded."""
    return im if im.mode == mode else im.convert(mode)


def fit(im: Image.Image, size: int, how: str) -> Image.Image:
    """``im`` as ``size`` x ``size``: its centred square resized (``crop``), or all of it
    squeezed (``resize``); bilinear, antialiased when shrinking."""
    if im.size == (size, size):
        return im
    box = None
    if how == "crop":
        w, h = im.size
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        box = (left, top, left + side, top + side)
    return im.resize((size, size), Image.Resampling.BILINEAR, box=box)


class ImageFileRows(Rows):
    """Image files read as uint8 rows (C, H, W), a batch at a time. Holds only path strings
    (picklable: ``DataLoader`` workers read their own batches)."""

    def __init__(
        self,
        paths: list[str],
        mode: str,
        size: tuple[int, int],
        image_size: int | None = None,
        image_fit: str = "crop",
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.mode, self.size = mode, (int(size[0]), int(size[1]))  # size: (width, height)
        self.image_size, self.image_fit = image_size, image_fit
        self.item_shape = (3 if mode == "RGB" else 1, self.size[1], self.size[0])
        self.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        out = np.empty((len(index), *self.item_shape), dtype=self.dtype)
        for i, k in enumerate(index):
            pixels = self.decode(self.paths[k])
            out[i] = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return out

    def decode(self, path: str) -> np.ndarray:
        """The file's pixels, (H, W) grey or (H, W, 3) RGB, at this source's size."""
        try:
            with Image.open(path) as im:
                if self.image_size is not None:
                    im.draft(None, (self.image_size, self.image_size))  # JPEG: decode smaller
                im.load()
                im = convert(im, self.mode)
                if self.image_size is not None:
                    im = fit(im, self.image_size, self.image_fit)
                pixels = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise _unreadable(path, err, skip_hint=False) from None
        if pixels.shape[:2] != self.item_shape[1:]:
            h, w = pixels.shape[:2]
            raise DataError(
                f"images: '{path}' is {w}x{h} now, not the {self.size[0]}x{self.size[1]} it "
                "was when the folder was opened: open the folder again"
            )
        return pixels


def classes_of(root: Path, headers: list[Header]) -> list[str] | None:
    """Each image's first-level sub-folder under ``root``, or None when every image lies
    directly in ``root``; both at once is an error."""
    parts = [Path(h.path).relative_to(root).parts for h in headers]
    loose = [h.path for h, p in zip(headers, parts, strict=True) if len(p) == 1]
    if not loose:
        return [p[0] for p in parts]
    if len(loose) == len(headers):
        return None
    foldered = next(h.path for h, p in zip(headers, parts, strict=True) if len(p) > 1)
    raise DataError(
        f"images: '{root}' has images both in it ('{loose[0]}') and in class sub-folders "
        f"('{foldered}'): put every image in a class folder, or none"
    )


def common_form(headers: list[Header], image_size: int | None) -> tuple[str, tuple[int, int]]:
    """The one mode and (width, height) of every image, or an error naming two that differ
    (any mode and size go with ``image_size``: grey and colour together read as colour)."""
    by_mode = {h.mode: h for h in headers}
    if image_size is not None:
        return ("RGB" if "RGB" in by_mode else "L"), (image_size, image_size)
    if len(by_mode) > 1:
        grey, rgb = by_mode["L"], by_mode["RGB"]
        raise DataError(
            f"images: grey and colour images are mixed ('{grey.path}' is grey, '{rgb.path}' "
            "colour): pass --image-size to read them all as colour at one size"
        )
    first = headers[0]
    other = next((h for h in headers if h.size != first.size), None)
    if other is not None:
        raise DataError(
            f"images: images differ in size ('{first.path}' is {first.size[0]}x"
            f"{first.size[1]}, '{other.path}' {other.size[0]}x{other.size[1]}): pass "
            "--image-size to resize them all to one"
        )
    return first.mode, first.size


def _check_options(image_size: int | None, image_fit: str) -> None:
    if image_fit not in IMAGE_FITS:
        raise DataError(
            f"unknown --image-fit {image_fit!r}; choose one of: {', '.join(IMAGE_FITS)}"
        )
    if image_size is not None and (isinstance(image_size, bool) or int(image_size) < 1):
        raise DataError(f"--image-size must be a positive number of pixels, not {image_size}")


def _split_files(root: Path) -> dict[str, tuple[Path, list[Path]]]:
    """The folder of each split and its image files: ``train/`` and ``test/`` when the
    folder has both (images elsewhere are left out, with a warning), else the whole folder."""
    files = image_files(root)
    if not files:
        raise DataError(f"images: no image files ({KINDS}) in '{root}'")
    if not ((root / "train").is_dir() and (root / "test").is_dir()):
        return {"train": (root, files)}
    splits = {}
    for name in ("train", "test"):
        mine = [p for p in files if p.relative_to(root).parts[0] == name]
        if not mine:
            raise DataError(f"images: '{root / name}' holds no image files ({KINDS})")
        splits[name] = (root / name, mine)
    others = len(files) - sum(len(f) for _, f in splits.values())
    if others:
        warn_data(
            f"images: {others} image file(s) in '{root}' outside train/ and test/ are not read"
        )
    return splits


def _warn_skipped(root: Path, bad: list[tuple[str, str]]) -> None:
    if bad:
        path, why = bad[0]
        warn_data(
            f"images: skipped {len(bad)} unreadable file(s) in '{root}' (e.g. '{path}': {why})"
        )


def _labels(
    folders: dict[str, Path], headers: dict[str, list[Header]]
) -> tuple[dict[str, np.ndarray | None], list[str] | None]:
    """Each split's labels (indices into the sorted class names) and the class names."""
    named = {s: classes_of(folder, headers[s]) for s, folder in folders.items()}
    if all(n is None for n in named.values()):
        return {s: None for s in named}, None
    if any(n is None for n in named.values()):
        train, test = folders["train"], folders["test"]
        raise DataError(
            f"images: '{train}' and '{test}' must both have class sub-folders, or neither"
        )
    classes = sorted({c for n in named.values() for c in n})
    index = {c: i for i, c in enumerate(classes)}
    return {s: np.array([index[c] for c in n], dtype=np.int64) for s, n in named.items()}, classes


@reader("images", lambda p: p.is_dir())
def open_image_folder(
    path: Path,
    *,
    image_size: int | None = None,
    image_fit: str = "crop",
    skip_bad: bool = False,
) -> DataSource:
    """The images under the folder ``path`` (see the module doc), their class labels if
    they lie in class sub-folders, and its ``train/``/``test/`` split if it has one."""
    image_fit = "crop" if image_fit is None else image_fit  # an option left unset
    _check_options(image_size, image_fit)
    image_size = None if image_size is None else int(image_size)
    root = Path(path).absolute()
    splits = _split_files(root)
    headers: dict[str, list[Header]] = {}
    bad: list[tuple[str, str]] = []
    for split, (_, files) in splits.items():
        headers[split], dropped = scan(files, skip_bad)
        bad += dropped
        if not headers[split]:
            raise DataError(f"images: no readable image files in '{root}' ({split})")
    _warn_skipped(root, bad)
    mode, size = common_form([h for hs in headers.values() for h in hs], image_size)
    labels, classes = _labels({s: folder for s, (folder, _) in splits.items()}, headers)

    def rows(split: str) -> ImageFileRows:
        return ImageFileRows([h.path for h in headers[split]], mode, size, image_size, image_fit)

    facts = {"mode": mode, "image_size": image_size, "image_fit": image_fit}
    if classes is not None:
        facts["classes"] = classes
    facts["skipped"] = len(bad)
    return DataSource(
        name=str(root),
        format="images",
        train=rows("train"),
        test=rows("test") if "test" in headers else None,
        train_labels=labels["train"],
        test_labels=labels.get("test"),
        values="8-bit",
        facts=facts,
    )
