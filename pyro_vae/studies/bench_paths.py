"""The training paths the benchmark times: this project's step (eager and compiled), a
hand-written PyTorch loop, plain Pyro SVI on the same tensors, and Pyro's example style. Each
trains the same MLP with Adam on the same data and batch size; ``epoch()`` trains one epoch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from ..checks import HandwrittenVAE
from ..data import Binarizer, ImageData
from ..model import build_vae
from ..training import TrainConfig, Trainer, assemble


class PyroVAEPath:
    """This project's training step, through its trainer (no evaluation, no files)."""

    def __init__(
        self, data: ImageData, opts: dict, compile: bool = False, cuda_graphs: bool = False
    ) -> None:
        config = TrainConfig(
            hidden=opts["hidden"],
            z_dim=opts["z_dim"],
            batch_size=opts["batch_size"],
            lr=opts["lr"],
            device=opts["device"],
            seed=opts["seed"],
            epochs=1,
            estimator=opts["estimator"],
            binarize=opts["binarize"],
            compile=compile,
            cuda_graphs=cuda_graphs or None,
            check_reference=False,
            progress=False,
        )
        self.trainer = Trainer(assemble(config, data))
        self.build_seconds = 0.0

    def epoch(self) -> None:
        self.trainer.run_epoch()
        if self.trainer.parts.compiled is not None:
            self.build_seconds = self.trainer.parts.compiled.build_seconds


class HandwrittenPath:
    """The hand-written loss in a plain loop (:class:`pyro_vae.checks.HandwrittenVAE`)."""

    def __init__(self, data: ImageData, opts: dict) -> None:
        self.model = HandwrittenVAE(
            data,
            hidden=opts["hidden"],
            z_dim=opts["z_dim"],
            batch_size=opts["batch_size"],
            lr=opts["lr"],
            seed=opts["seed"],
            binarize=opts["binarize"],
        )

    def epoch(self) -> None:
        self.model.epoch()


def _plain_pyro_svi(data: ImageData, opts: dict, device: torch.device):
    """``SVI(Trace_ELBO)`` with ``pyro.optim.Adam`` over a fresh VAE, as Pyro's users write it."""
    torch.manual_seed(opts["seed"])
    vae = build_vae(
        data.shape, hidden=opts["hidden"], z_dim=opts["z_dim"], likelihood="bernoulli"
    ).to(device)
    pyro.clear_param_store()
    return SVI(vae.model, vae.guide, Adam({"lr": opts["lr"]}), Trace_ELBO())


class PyroTraceELBOPath:
    """``SVI(Trace_ELBO)`` on tensors on the device: what the fast path is measured against."""

    def __init__(self, data: ImageData, opts: dict) -> None:
        self.device = torch.device(opts["device"])
        self.svi = _plain_pyro_svi(data, opts, self.device)
        self.binarizer = Binarizer(opts["binarize"], data, seed=opts["seed"])
        self.batch_size = opts["batch_size"]

    def epoch(self) -> None:
        x_epoch = self.binarizer.train_x()
        perm = torch.randperm(x_epoch.shape[0], device=self.device)
        for start in range(0, x_epoch.shape[0], self.batch_size):
            self.svi.step(x_epoch[perm[start : start + self.batch_size]])


class _PerImageDataset(torch.utils.data.Dataset):
    """Images one at a time as torchvision's MNIST datasets serve them: uint8 -> PIL ->
    ``ToTensor``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, side: int) -> None:
        from torchvision.transforms import ToTensor

        self.images = (images.cpu() * 255).round().to(torch.uint8).reshape(-1, side, side)
        self.labels = labels.cpu()
        self.to_tensor = ToTensor()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.to_tensor(Image.fromarray(self.images[i].numpy(), mode="L")), self.labels[i]


class PyroExamplePath:
    """Pyro's examples/vae style: DataLoader + SVI(Trace_ELBO) + pyro.optim.Adam."""

    def __init__(self, data: ImageData, opts: dict) -> None:
        self.device = torch.device(opts["device"])
        self.svi = _plain_pyro_svi(data, opts, self.device)
        side = int(data.train_x.shape[1] ** 0.5)
        loader_data = _PerImageDataset(data.train_x, data.train_y, side)
        self.loader = torch.utils.data.DataLoader(
            loader_data, batch_size=opts["batch_size"], shuffle=True
        )

    def epoch(self) -> None:
        for x, _ in self.loader:
            x = x.reshape(-1, 784).to(self.device)
            self.svi.step(torch.bernoulli(x))  # binarized per batch, as the others per epoch


# slug -> (label in tables, how to build the path)
PATHS: dict[str, tuple[str, Callable[[ImageData, dict], Any]]] = {
    "pyro-vae": ("pyro-vae", lambda data, opts: PyroVAEPath(data, opts)),
    "pyro-vae-compile": (
        "pyro-vae --compile",
        lambda data, opts: PyroVAEPath(data, opts, compile=True),
    ),
    "pyro-vae-cuda-graphs": (
        "pyro-vae --compile --cuda-graphs",
        lambda data, opts: PyroVAEPath(data, opts, compile=True, cuda_graphs=True),
    ),
    "hand-written": ("hand-written eager PyTorch", HandwrittenPath),
    "pyro-trace-elbo": ("plain Pyro SVI(Trace_ELBO)", PyroTraceELBOPath),
    "pyro-example": ("Pyro's example style", PyroExamplePath),
}
CUDA_ONLY = {"pyro-vae-cuda-graphs"}
