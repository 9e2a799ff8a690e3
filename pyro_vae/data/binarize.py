"""Binarization: grey levels in [0, 1] turned into the 0/1 pixels a Bernoulli likelihood observes.

- ``none``: grey levels as they are.
- ``dynamic``: each epoch draws fresh x_bin ~ Bernoulli(x) for the training set (Salakhutdinov
  & Murray, 2008; the IWAE paper's protocol); the test set is drawn once with a fixed seed.
- ``static``: training and test sets are drawn once with a fixed seed and kept.
"""

from __future__ import annotations

import torch

from .datasets import DataError, ImageData

TEST_BINARIZATION_SEED = 1234  # fixed: the test set must be the same for every run
BINARIZATIONS = ("none", "dynamic", "static")


def _check_probabilities(mode: str, data: ImageData) -> None:
    """Binarizing draws Bernoulli(x) per pixel, so x must lie in [0, 1]: data outside (counts,
    real values) is one line that says what to do, not a torch traceback from the draw."""
    for name, x in (("training", data.train_x), ("test", data.test_x)):
        low, high = float(x.min()), float(x.max())
        if not (0.0 <= low and high <= 1.0):  # (NaN fails both)
            raise DataError(
                f"--binarize {mode} draws Bernoulli(x) per pixel, which needs values in [0, 1]; "
                f"the {name} data spans [{low:.4g}, {high:.4g}]: counts or real values want "
                "--binarize none and a likelihood of their kind (poisson, negative-binomial, "
                "gaussian, ...)"
            )


class Binarizer:
    """Turns grey levels into the training and test tensors of each epoch (see module doc)."""

    def __init__(self, mode: str, data: ImageData, seed: int) -> None:
        if mode not in BINARIZATIONS:
            raise DataError(
                f"unknown binarization {mode!r}; choose one of: {', '.join(BINARIZATIONS)}"
            )
        self.mode = mode
        self._grey = data.train_x
        device = data.train_x.device
        self._seed = seed
        self._generator = torch.Generator(device=device).manual_seed(seed)
        fixed = torch.Generator(device=device).manual_seed(TEST_BINARIZATION_SEED)
        if mode == "none":
            self.test_x, self._train = data.test_x, data.train_x
        else:
            _check_probabilities(mode, data)
            self.test_x = torch.bernoulli(data.test_x, generator=fixed)
            self._train = (
                torch.bernoulli(data.train_x, generator=fixed) if mode == "static" else None
            )

    def train_x(self) -> torch.Tensor:
        """The training images for the next epoch (a fresh draw under ``dynamic``).

        The draw is ``1[u < x]`` with u ~ Uniform[0, 1), which is x_bin ~ Bernoulli(x)
        exactly, made in place in one buffer: 2.8x faster than ``torch.bernoulli`` on the CPU
        (0.33 s vs 0.91 s for Fashion-MNIST's 47M pixels), where it was a fifth of an epoch.
        """
        if self.mode == "dynamic":
            u = torch.empty_like(self._grey).uniform_(generator=self._generator)
            return u.lt_(self._grey)
        return self._train

    def restart(self) -> None:
        """Back to the first epoch's draw."""
        self._generator.manual_seed(self._seed)

    def state(self) -> torch.Tensor:
        return self._generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self._generator.set_state(state)
