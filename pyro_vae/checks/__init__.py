"""The yardsticks: hand-written PyTorch losses (no Pyro, no ``torch.distributions``) that every
objective is checked against, the first-batch check that compares them in every run, and the
hand-written baseline VAE that pyro-vae is compared with."""

from .baseline_vae import HandwrittenVAE, train_handwritten
from .reference_check import (
    ReferenceMismatch,
    check_against_reference,
    pyro_and_reference_loss,
)
from .reference_losses import MissingReference, reference_loss

__all__ = [
    "HandwrittenVAE",
    "MissingReference",
    "ReferenceMismatch",
    "check_against_reference",
    "pyro_and_reference_loss",
    "reference_loss",
    "train_handwritten",
]
