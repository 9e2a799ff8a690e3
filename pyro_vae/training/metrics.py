"""What a run records: the bound on test and training images after each epoch, and the
summary at its end. All quantities are nats per image."""

from __future__ import annotations

from typing import Any

import pyro
import torch

from ..inference import evaluate_elbo
from ..inference.class_measures import classification_error, cluster_accuracy
from ..model import VAE, JointVAE, SemiSupervisedVAE

# Training -ELBO is measured on at most this many training images per epoch (a fixed subset).
TRAIN_EVAL_IMAGES = 10_000

METRIC_FIELDS = [
    "epoch",
    "beta",
    "train_loss",
    "train_neg_elbo",
    "train_distortion",
    "train_rate",
    "test_neg_elbo",
    "test_distortion",
    "test_rate",
    "train_seconds",
    "eval_seconds",
]
# models with a class variable also record test_error: for m2 the classification error of
# argmax q(y|x), for joint 1 - cluster accuracy (c matched to the classes as well as it can be)
CLASS_FIELDS = ["test_error"]


def metric_fields(vae: VAE) -> list[str]:
    """The columns of metrics.csv for this model."""
    return METRIC_FIELDS + (CLASS_FIELDS if isinstance(vae, JointVAE) else [])


@torch.no_grad()
def class_error(vae: JointVAE, x: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """M2: the share of images q(y|x) misclassifies; joint: of images whose most probable
    cluster, matched to a class, is not their label's."""
    predicted = torch.cat(
        [vae.classify(x[i : i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)]
    )
    if isinstance(vae, SemiSupervisedVAE):
        return classification_error(predicted, labels)
    return 1.0 - cluster_accuracy(predicted, labels)


class EpochEvaluation:
    """The plain (beta = 1) bound, its distortion and rate, on the test images and on a fixed
    random subset of the training images as drawn this epoch; for a model with a class
    variable, its test error (:func:`class_error`) against ``test_y``."""

    def __init__(
        self,
        test_x: torch.Tensor,
        n_train: int,
        seed: int,
        batch_size: int,
        test_y: torch.Tensor | None = None,
    ) -> None:
        self.test_x, self.test_y = test_x, test_y
        self.batch_size = batch_size
        generator = torch.Generator().manual_seed(seed)
        self.train_idx = torch.randperm(n_train, generator=generator)[:TRAIN_EVAL_IMAGES].to(
            test_x.device
        )

    def __call__(self, vae: VAE, x_epoch: torch.Tensor) -> dict[str, float]:
        vae.eval()
        model, guide, batch = vae.model, vae.guide, self.batch_size
        test = evaluate_elbo(model, guide, self.test_x, batch)
        train = evaluate_elbo(model, guide, x_epoch[self.train_idx], batch)
        row = {**train.as_dict("train_"), **test.as_dict("test_")}
        if isinstance(vae, JointVAE) and self.test_y is not None:
            row["test_error"] = class_error(vae, self.test_x, self.test_y, batch)
        return row


def summarize(
    metrics: list[dict[str, float]],
    num_train: int,
    num_test: int,
    device: torch.device,
    likelihood: object | None = None,
) -> dict[str, Any]:
    """Final numbers of a run (the first epoch, which carries one-off start-up costs, is left
    out of the timing when there is more than one). For a ``likelihood`` of 8-bit data (a
    probability mass over the 256 levels: ``discretized-logistic``) also
    ``test_bits_per_dim``, the test -ELBO in bits per value (:func:`bits_per_dim`, no offset).
    A density (gaussian, beta, ...) gets none: it is fitted to k / 255 itself, not to
    dequantized levels, so no bits/dim of it would be comparable."""
    from ..inference.bits import bits_per_dim
    from ..model.discretized_logistic import eight_bit_values

    last = metrics[-1]
    timed = metrics[1:] or metrics
    seconds = sum(r["train_seconds"] for r in timed)
    class_fields = {k: last[k] for k in CLASS_FIELDS if k in last}
    bits = {}
    if (values := eight_bit_values(likelihood)) is not None:
        bits["test_bits_per_dim"] = bits_per_dim(last["test_neg_elbo"], values, discrete=True)
    return {
        **class_fields,
        "test_neg_elbo": last["test_neg_elbo"],
        **bits,
        "test_distortion": last["test_distortion"],
        "test_rate": last["test_rate"],
        "train_neg_elbo": last["train_neg_elbo"],
        "best_test_neg_elbo": min(r["test_neg_elbo"] for r in metrics),
        "seconds_per_epoch": seconds / len(timed),
        "images_per_second": num_train * len(timed) / seconds,
        "epochs": int(last["epoch"]),
        "num_train": num_train,
        "num_test": num_test,
        "device": str(device),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "threads": torch.get_num_threads(),
        "units": "nats per image",
    }
