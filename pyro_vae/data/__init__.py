"""Data: datasets by name as in-memory tensors, binarization, context rows, synthetic counts."""

from .binarize import BINARIZATIONS, Binarizer
from .context import CONTEXTS, with_context
from .datasets import DATASETS, DataError, ImageData, load_dataset, read_idx_dir
from .synthetic import CountTruth, count_data

__all__ = [
    "BINARIZATIONS",
    "CONTEXTS",
    "DATASETS",
    "Binarizer",
    "CountTruth",
    "DataError",
    "ImageData",
    "count_data",
    "load_dataset",
    "read_idx_dir",
    "with_context",
]
