"""Studies: each one command, ``pyro-vae study NAME``, and one module here, built on one
harness (:mod:`pyro_vae.studies.harness`) and one table writer (:mod:`pyro_vae.studies.tables`).

Importing this package registers every study in :data:`STUDIES`.
"""

from . import (  # noqa: F401  (each registers its study)
    ae_vs_vae,
    ais_convergence,
    beta_sweep,
    clustering,
    count_recovery,
    discrete_estimators,
    estimators,
    gradient_snr,
    handwritten,
    invariance,
    models,
    posterior_collapse,
    semi_supervised,
)
from .harness import STUDIES, study, train_and_measure, train_or_reuse

__all__ = ["STUDIES", "study", "train_and_measure", "train_or_reuse"]
