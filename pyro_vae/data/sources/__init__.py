"""The user's data, by what the path is: readers (arrays, image folders, AnnData, tables),
the split, the record of where the data came from, and streaming (see
:mod:`pyro_vae.data.sources.source`)."""

from typing import Any

from ..datasets import DATASETS
from . import anndata_file, arrays, images, tables  # noqa: F401  (register their readers)
from .images import IMAGE_FITS
from .rows import LAYOUTS, ArrayRows, Rows
from .source import (
    READERS,
    DataSource,
    check_record,
    materialize,
    memory_budget,
    open_source,
    parse_size,
    split_source,
    valid_size,
    value_scale,
)
from .stream import LazyRows, batch_loader

STREAMING = ("auto", "always", "never")


@DATASETS.register("file")
def file_source(
    *,
    data: str | None = None,
    data_key: str | None = None,
    layout: str = "auto",
    image_size: int | None = None,
    image_fit: str = "crop",
    skip_bad: bool = False,
) -> DataSource:
    """Your own data from ``--data PATH``, read by what the path is (:data:`READERS`)."""
    from ..datasets import DataError

    if data is None:
        raise DataError("--dataset file reads your data: give its path with --data PATH")
    given: dict[str, Any] = {
        "data_key": data_key,
        "layout": layout,
        "image_size": image_size,
        "image_fit": image_fit,
        "skip_bad": skip_bad,
    }
    return open_source(data, **given)


__all__ = [
    "IMAGE_FITS",
    "LAYOUTS",
    "STREAMING",
    "file_source",
    "memory_budget",
    "parse_size",
    "valid_size",
    "READERS",
    "ArrayRows",
    "DataSource",
    "LazyRows",
    "Rows",
    "batch_loader",
    "check_record",
    "materialize",
    "open_source",
    "split_source",
    "value_scale",
]
