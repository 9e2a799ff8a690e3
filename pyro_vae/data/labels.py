"""A label budget for semi-supervised models: each row is the pixels, then K label columns.

A labelled training image carries its one-hot class; every other row (the rest of the
training set, and the whole test set) carries zeros, which the semi-supervised VAE reads as
"no label" (:class:`pyro_vae.model.class_variable.SemiSupervisedVAE`). The labelled images are
chosen class-balanced (the same number of each class) by a seeded draw, so a run's labels
are the same every time for the same seed.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from .datasets import DataError, ImageData

LABEL_CONTEXT = "partial-labels"


def balanced_choice(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Indices of ``count`` rows, ``count / K`` of each of the K classes in ``labels``, drawn
    without replacement by a generator seeded with ``seed``; sorted."""
    classes = int(labels.max()) + 1
    if count % classes:
        raise DataError(
            f"a class-balanced label budget is a multiple of the {classes} classes; got {count}"
        )
    per_class = count // classes
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for k in range(classes):  # a loop over classes at data preparation, once per run
        rows = torch.nonzero(labels.cpu() == k).flatten()
        if len(rows) < per_class:
            raise DataError(
                f"{count} labels need {per_class} images of class {k}; the training set has "
                f"{len(rows)}"
            )
        chosen.append(rows[torch.randperm(len(rows), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def with_labels(data: ImageData, count: int, seed: int = 0) -> ImageData:
    """``data`` with K label columns after the pixels: one-hot on ``count`` class-balanced
    training rows (:func:`balanced_choice`), zero on the other rows and on every test row."""
    if data.context != "none":
        raise DataError(f"the data already carry the context {data.context!r}")
    if count < 0:
        raise DataError(f"the number of labels must be >= 0, got {count}")
    classes = int(max(data.train_y.max(), data.test_y.max())) + 1
    train_labels = torch.zeros(data.train_x.shape[0], classes, dtype=data.train_x.dtype)
    if count:
        chosen = balanced_choice(data.train_y, count, seed)
        one_hot = F.one_hot(data.train_y[chosen].long().cpu(), classes)
        train_labels[chosen] = one_hot.to(train_labels.dtype)
    test_labels = torch.zeros(data.test_x.shape[0], classes, dtype=data.test_x.dtype)
    return dataclasses.replace(
        data,
        train_x=torch.cat([data.train_x, train_labels.to(data.train_x.device)], -1),
        test_x=torch.cat([data.test_x, test_labels.to(data.test_x.device)], -1),
        context=LABEL_CONTEXT,
        context_dim=classes,
    )


def labelled_rows(x: torch.Tensor, classes: int) -> torch.Tensor:
    """Which rows of ``x`` (pixels then ``classes`` label columns) carry a label."""
    return x[..., -classes:].sum(-1) > 0
