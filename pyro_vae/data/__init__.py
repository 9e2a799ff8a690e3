"""Data: datasets by name as in-memory tensors, binarization, context rows, label budgets,
rotated digits, synthetic counts."""

from . import patches  # noqa: F401  (registers image-patches)
from .binarize import BINARIZATIONS, Binarizer
from .context import CONTEXTS, with_context
from .datasets import DATASETS, DataError, ImageData, load_dataset, read_idx_dir
from .labels import LABEL_CONTEXT, balanced_choice, labelled_rows, with_labels
from .rotated import RotatedData, rotate_images, rotated_mnist_sample  # registers mnist-rotated
from .sources import DataSource, open_source  # registers file (your --data)
from .synthetic import CountTruth, count_data

__all__ = [
    "BINARIZATIONS",
    "CONTEXTS",
    "DATASETS",
    "Binarizer",
    "CountTruth",
    "LABEL_CONTEXT",
    "RotatedData",
    "DataError",
    "DataSource",
    "ImageData",
    "balanced_choice",
    "count_data",
    "labelled_rows",
    "load_dataset",
    "open_source",
    "read_idx_dir",
    "rotate_images",
    "rotated_mnist_sample",
    "with_context",
    "with_labels",
]
