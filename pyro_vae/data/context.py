"""Context rows for conditional models: each row holds the observed pixels, then its context.

Contexts: ``label`` (the one-hot class) or ``top-half`` (the upper half of the image: the model
then sees the lower half). Keeping the context in the data row lets conditional models keep the
one-argument ``model(x)`` / ``guide(x)`` every estimator, evaluator and the trainer use
(:class:`pyro_vae.model.conditional.ConditionalVAE` splits the row again).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from .datasets import ImageData

CONTEXTS = ("none", "label", "top-half")


def with_context(data: ImageData, context: str) -> ImageData:
    """``data`` with each row's context appended (unchanged for "none" or when present)."""
    if context not in CONTEXTS:
        raise ValueError(f"unknown context {context!r}; choose one of: {', '.join(CONTEXTS)}")
    if context == "none" or data.context == context:
        return data
    if data.context != "none":
        raise ValueError(f"data already carry the context {data.context!r}")
    if context == "label":
        classes = int(max(data.train_y.max(), data.test_y.max())) + 1

        def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, F.one_hot(y.long(), classes).to(x.dtype)], -1)

        return dataclasses.replace(
            data,
            train_x=add(data.train_x, data.train_y),
            test_x=add(data.test_x, data.test_y),
            context=context,
            context_dim=classes,
        )
    if len(data.shape) != 3:
        raise ValueError(f"top-half needs images (C, H, W); the data have shape {data.shape}")
    c, h, w = data.shape
    top = h // 2

    def split(x: torch.Tensor) -> torch.Tensor:
        images = x.reshape(-1, c, h, w)
        upper, lower = images[:, :, :top], images[:, :, top:]
        return torch.cat([lower.flatten(1), upper.flatten(1)], -1)

    return dataclasses.replace(
        data,
        train_x=split(data.train_x),
        test_x=split(data.test_x),
        shape=(c, h - top, w),
        context=context,
        context_dim=c * top * w,
    )
