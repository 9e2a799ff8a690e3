"""Helpers that several test modules share: the trainer's tiny run, small data saved as a file
a command can read again, a run trained through the command line, the small VAEs and data of
the reference tests (every family, parameters moved off their initial values), the gradients
of a loss, small images, and the small models of the estimator tests."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyro_vae import GUIDES, LIKELIHOODS, NETWORKS, PRIORS, build_vae
from pyro_vae.checks.linear_gaussian import LinearGaussian
from pyro_vae.cli import main
from pyro_vae.data import ImageData
from pyro_vae.model import build_two_layer_vae
from pyro_vae.training import TrainConfig
from pyro_vae.training.assemble import make_optimizer
from pyro_vae.training.compiled import CompiledStep

SHAPE = (1, 28, 28)

# every likelihood with a prior that has an analytic KL and one that has none, and every prior
# with a discrete and a continuous likelihood: each family meets both KL paths
FAMILY_CASES = sorted(
    set(itertools.product(LIKELIHOODS.names(), ["normal", "mixture"], ["diagonal"]))
    | set(itertools.product(["bernoulli", "gaussian-learned"], PRIORS.names(), ["diagonal"]))
    | set(itertools.product(["bernoulli"], ["normal", "vamp"], GUIDES.names()))
    | set(itertools.product(["poisson"], ["mixture"], GUIDES.names()))
)


def make_vae(
    likelihood: str, prior: str, beta: float = 1.0, network: str = "mlp", **options: object
):
    """A small VAE whose every parameter is moved off its initial value."""
    torch.manual_seed(1)
    small = {"hidden": (16,), "components": 4, "pseudo_inputs": 5}  # where the parts take them
    taken = NETWORKS.options(network) + PRIORS.options(prior)
    small = {k: v for k, v in small.items() if k in taken}
    vae = build_vae(
        SHAPE,
        network=network,
        likelihood=likelihood,
        prior=prior,
        z_dim=3,
        beta=beta,
        **small,
        **options,
    )
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.2 * torch.randn_like(p))
        if prior == "vamp":  # spread the pseudo-inputs over [0, 1], some clipped
            vae.prior.pseudo_inputs.uniform_(-0.2, 1.2)
    return vae


def make_data(likelihood: str, n: int = 6) -> torch.Tensor:
    """Data the likelihood can observe: binary, in [0, 1], 8-bit levels k/255, real, or counts
    (no empty row)."""
    g = torch.Generator().manual_seed(2)
    dtype = torch.get_default_dtype()
    kind = LIKELIHOODS.get(likelihood).data_kind
    x = torch.rand(n, 784, generator=g, dtype=dtype)
    if kind == "binary":
        return torch.bernoulli(x, generator=g)
    if kind == "8-bit":
        return torch.round(255 * x) / 255
    if kind == "counts":
        counts = torch.poisson(3 * x, generator=g)
        counts[:, 0] += 1
        return counts
    return x


def tiny_config(directory: Path, **options: Any) -> TrainConfig:
    """The tiny run the trainer's tests share: 2 epochs of an MLP 784-32-3, batches of 64, on
    the ``small_data`` fixture (conftest.py), written to DIRECTORY/run, quietly."""
    base = dict(epochs=2, batch_size=64, hidden=(32,), z_dim=3, out=str(directory / "run"))
    return TrainConfig(**(base | {"progress": False} | options))


def saved_data(path: Path, data: ImageData) -> Path:
    """``data`` written to the .npz ``path`` with its own split: ``train_x`` / ``test_x`` (its
    grey images as stored, float32, (N, H, W)) and ``train_y`` / ``test_y`` (its labels). A
    run trained on ``TrainConfig(data=str(path))`` records the file, so a command reading the
    run opens the same data again (a run on data given from Python records them as given,
    which only Python can pass again). The path."""
    assert data.shape[0] == 1 and data.context_dim == 0, "grey images without context"

    def images(x: torch.Tensor) -> np.ndarray:
        return x.reshape(len(x), *data.shape[1:]).to(torch.float32).cpu().numpy()

    arrays = {"train_x": images(data.train_x), "test_x": images(data.test_x)}
    if data.train_y is not None and data.test_y is not None:
        arrays |= {"train_y": data.train_y.cpu().numpy(), "test_y": data.test_y.cpu().numpy()}
    np.savez(path, **arrays)
    return path


def trained_run(out: Path, *flags: str) -> Path:
    """``pyro-vae train`` for 2 epochs of an MLP 784-64-z on mnist-sample into ``out`` (the
    flags given are added, ``--z-dim`` among them), quietly; the run directory."""
    args = ["train", "--epochs", "2", "--hidden", "64", *flags, "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    return out


def grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d params, zeros for parameters the loss does not use (graph kept)."""
    got = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, got, strict=True)]


def some_images(likelihood: str = "bernoulli", n: int = 5, side: int = 6) -> torch.Tensor:
    """``n`` random side x side images, flat: binary for the Bernoulli likelihood, else grey."""
    torch.manual_seed(2)
    x = torch.rand(n, side * side)
    return (x < 0.4).to(x.dtype) if likelihood == "bernoulli" else x


def imperfect_linear_gaussian(
    amount: float, n: int
) -> tuple[LinearGaussian, torch.Tensor, torch.Tensor]:
    """A linear-Gaussian model (D = 8, d = 3) whose guide is the exact posterior perturbed by
    ``amount``, ``n`` images drawn from it, and their exact log p(x)."""
    lg = LinearGaussian(D=8, d=3).perturbed(amount)
    x = lg.sample(n)
    return lg, x, lg.log_evidence(x).detach()


def perturbed_two_layer() -> tuple[torch.nn.Module, torch.Tensor]:
    """A small two-layer VAE in float64 (6 Gaussian pixels, z1 and z2 of 2), its parameters
    moved off their initial values, and three images."""
    torch.manual_seed(0)
    vae = build_two_layer_vae(
        (6,), likelihood="gaussian", z_dim=2, z2_dim=2, hidden=(4,), upper_hidden=(3,), sigma=0.5
    ).double()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return vae, torch.randn(3, 6, dtype=torch.float64)


def loss_and_eps(vae, elbo, x):
    """Pyro's loss and the noise eps = (z - loc) / scale of the z it sampled."""
    kept = {}

    def guide(x):
        kept["z"] = vae.guide(x)
        return kept["z"]

    loss = elbo.differentiable_loss(vae.model, guide, x)
    return loss, vae.q.noise(vae.encoder, x, kept["z"]).detach()


def assert_step_trains(step: CompiledStep, x: torch.Tensor) -> None:
    """30 Adam steps on one batch lower the loss by more than 50 nats."""
    optimizer = make_optimizer(step.vae.parameters(), 1e-2)
    first = float(step(x, 1.0)[0])
    for _ in range(30):
        loss, _ = step(x, 1.0)
        optimizer.step()
    assert float(loss) < first - 50


@contextmanager
def package_warnings() -> Iterator[list[str]]:
    """The warnings the package logs while the block runs (the command line prints each as
    one ``pyro-vae:`` line), whatever handlers an earlier ``main`` set up."""
    caught: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record.getMessage())

    log = logging.getLogger("pyro_vae")
    handler = Keep(logging.WARNING)
    log.addHandler(handler)
    try:
        yield caught
    finally:
        log.removeHandler(handler)
