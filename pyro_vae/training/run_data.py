"""The data of a run: a built-in set, the user's ``--data``, or data given from Python; held
on the device when it fits, streamed from disk when it does not; recorded in config.json and
checked again by every command that reads the run.

Which path a run takes is decided once (``--stream auto``: by the data's size as float32
against ``--memory-budget``, by default half the free memory) and recorded with the source
(``data_source["read"]``): a resumed or evaluated run reads its data the same way on any
machine, so its numbers do not change with the machine's memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import DataError, ImageData, load_dataset, with_context, with_labels
from ..data.binarize import TEST_BINARIZATION_SEED
from ..data.sources import (
    DataSource,
    LazyRows,
    check_record,
    materialize,
    memory_budget,
    split_source,
    value_scale,
)
from ..data.sources.given import from_python, image_data_hash
from .option_checks import GIVEN_DATA
from .options import TrainConfig

DEVICE, STREAM = "device", "stream"  # how a run reads its data (recorded)


@dataclass
class RunData:
    """The run's data as the model sees it, and what streaming it needs."""

    data: ImageData  # tensors (on the device), or LazyRows standing for them (streamed)
    record: dict[str, Any]  # config.data_source
    source: DataSource | None = None  # the rows a streamed run reads batch by batch
    scale: float | None = None  # stored values times this are the model's (1/255 for 8-bit)

    @property
    def streamed(self) -> bool:
        return self.source is not None


def given_again() -> DataError:
    return DataError(
        "this run's data were given from Python: pass them again (pyro_vae.load_run(run_dir, "
        "data=...), pyro_vae.train(..., data=...)); a command line cannot read them"
    )


def open_run_data(
    config: TrainConfig, device: torch.device, given: Any = None, counts: bool = False
) -> RunData:
    """The run's data on ``device`` (``given``: passed from Python; ``counts``: the likelihood
    reads counts, so 8-bit values are not rescaled)."""
    if config.dataset not in ("file", GIVEN_DATA):
        if given is not None and not isinstance(given, ImageData):
            raise DataError(
                f"this run reads --dataset {config.dataset}; data passed from Python must be "
                "that dataset as pyro_vae.ImageData"
            )
        data = load_dataset(config.dataset, config.data_dir) if given is None else given
        return RunData(_in_context(config, data.validate(), device), {})
    if config.dataset == GIVEN_DATA and given is None:
        raise given_again()
    if isinstance(given, ImageData):  # already in memory as the model sees it
        record = {"format": GIVEN_DATA, "kind": "ImageData", "sha256": image_data_hash(given),
                  "shape": list(given.shape), "train": len(given.train_x),
                  "test": len(given.test_x), "read": DEVICE}  # fmt: skip
        _check_given(config.data_source, record)
        return RunData(_in_context(config, given.validate(), device), record)
    source = _open_source(config, given)
    if config.data_source:
        check_record(config.data_source, source)
    path = config.data_source.get("read") or _choose_path(config, source, device)
    record = {**source.record(), "read": path}
    if path == DEVICE:
        data = materialize(source, counts)
        return RunData(_in_context(config, data, device), record)
    return _streamed(config, source, record, device, counts)


def _open_source(config: TrainConfig, given: Any) -> DataSource:
    from ..data import DATASETS

    if config.dataset == GIVEN_DATA:
        source = from_python(given, config.layout or "auto")
    else:
        options = config.group("data")
        recorded = config.data_source.get("path")
        if recorded and not Path(str(options.get("data"))).exists():  # (run from elsewhere)
            options["data"] = recorded  # the absolute path the run recorded
        source = DATASETS.create("file", **{k: v for k, v in options.items() if k in
                                            DATASETS.options("file")})  # fmt: skip
    return split_source(source, config.test_fraction or 0.1, config.seed)


def _check_given(saved: dict[str, Any], record: dict[str, Any]) -> None:
    keys = [k for k in ("sha256", "shape", "train", "test") if k in saved and saved[k] != record[k]]
    if keys:
        raise DataError(
            "the data given are not this run's ("
            + "; ".join(f"{k} {saved[k]!r} then, {record[k]!r} now" for k in keys)
            + "): give the data it was trained on"
        )


def _choose_path(config: TrainConfig, source: DataSource, device: torch.device) -> str:
    if config.stream == "always":
        return STREAM
    if config.stream == "never":
        return DEVICE
    fits = source.float_bytes() <= memory_budget(config.memory_budget, device)
    return DEVICE if fits else STREAM


def _in_context(config: TrainConfig, data: ImageData, device: torch.device) -> ImageData:
    """Each row with its context when the model reads one (for ``m2``: its label columns,
    one-hot on ``--labels`` training images), on ``device``."""
    if config.labels is not None:
        return with_labels(data, config.labels, seed=config.seed).to(device)
    return with_context(data, config.context or "none").to(device)


def _streamed(
    config: TrainConfig, source: DataSource, record: dict[str, Any], device: torch.device,
    counts: bool,
) -> RunData:  # fmt: skip
    """Lazy rows in place of the tensors: a batch is read when a step or a measure asks."""
    if config.labels is not None or (config.context or "none") != "none":
        raise DataError(
            "streamed data are read a batch at a time; --model m2 and --context need every "
            "row in memory: raise --memory-budget or pass --stream never"
        )
    scale = value_scale(source, counts)
    binarized = config.binarize not in (None, "none")
    test_seed = TEST_BINARIZATION_SEED if binarized else None

    def labels(y: np.ndarray | None, n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.long) if y is None else torch.as_tensor(y).long()

    data = ImageData(
        LazyRows(source.train, scale, device),
        labels(source.train_labels, len(source.train)).to(device),
        LazyRows(source.test, scale, device, fixed_seed=test_seed),
        labels(source.test_labels, len(source.test)).to(device),
        shape=tuple(source.shape),
        name=source.name,
    )
    return RunData(data, record, source, scale)
