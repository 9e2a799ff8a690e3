"""Figures drawn at the end of a training run: an observer of the training loop."""

from __future__ import annotations

from typing import Any

from ..training import Observer, Trainer
from .figures import make_figures


class FiguresAtEnd(Observer):
    """Draws every figure of the trained model when the run finishes and swaps the set into
    RUN_DIR/figures (:meth:`RunDirectory.replace_figures`)."""

    def on_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        if trainer.run_dir is None:
            return
        c, parts = trainer.config, trainer.parts
        trainer.run_dir.replace_figures(
            lambda directory: make_figures(
                trainer.vae,
                parts.binarizer.test_x,
                parts.data.test_y,
                parts.data.shape,
                trainer.metrics,
                directory,
                title=f"{c.dataset}: {c.likelihood} / {c.prior} / {c.estimator}, "
                f"beta={c.beta}, z={c.z_dim}",
            )
        )
