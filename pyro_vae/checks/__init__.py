"""The yardsticks: hand-written PyTorch losses (no Pyro, no ``torch.distributions``) that every
objective is checked against, the first-batch check that compares them in every run, and the
hand-written baseline VAE that pyro-vae is compared with. An estimator's reference is
registered against its class (:func:`register_reference`)."""

from .baseline_vae import HandwrittenVAE, train_handwritten
from .pyro_check import check_against_pyro, pyro_counterpart
from .reference_check import (
    ReferenceMismatch,
    check_against_reference,
    missing_reference,
    pyro_and_reference_loss,
)
from .reference_losses import reference_loss
from .references import (
    MissingReference,
    find_reference,
    register_no_reference,
    register_reference,
)

__all__ = [
    "HandwrittenVAE",
    "MissingReference",
    "ReferenceMismatch",
    "check_against_pyro",
    "check_against_reference",
    "find_reference",
    "missing_reference",
    "pyro_and_reference_loss",
    "pyro_counterpart",
    "reference_loss",
    "register_no_reference",
    "register_reference",
    "train_handwritten",
]
