"""The training paths the benchmark times: this project's step (eager and compiled), a
hand-written PyTorch loop, plain Pyro SVI on the same tensors, Pyro's example style, and
NumPyro's SVI (:mod:`benchmarks.numpyro_paths`). Each trains the same MLP with Adam on
the same data and batch size; ``epoch()`` trains one epoch. Also here: why a path cannot run
with the given options, and the matrix-product FLOPs of a training step.

A path's ``samples_per_image`` is how many z its decoder sees per image (1 unless the
objective is importance-weighted: K, or M K for M groups of K)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_vae.checks import HandwrittenVAE
from pyro_vae.data import Binarizer, ImageData
from pyro_vae.inference import ESTIMATORS
from pyro_vae.model import build_vae
from pyro_vae.training import TrainConfig, Trainer, assemble

from . import numpyro_paths


class PyroVAEPath:
    """This project's training step, through its trainer (no evaluation, no files)."""

    def __init__(
        self,
        data: ImageData,
        opts: dict,
        compile: bool = False,
        cuda_graphs: bool = False,
        no_flags: bool = False,
    ) -> None:
        """``no_flags``: the step a user gets without --compile for a run of the default
        length (100 epochs), which compiles by itself from ``--compile-from`` steps;
        otherwise eager (``--compile-from 0``) unless ``compile``."""
        length = {} if no_flags else {"epochs": 1, "compile_from": 0}
        config = TrainConfig(
            hidden=opts["hidden"],
            z_dim=opts["z_dim"],
            batch_size=opts["batch_size"],
            lr=opts["lr"],
            device=opts["device"],
            seed=opts["seed"],
            estimator=opts["estimator"],
            particles=opts.get("particles"),
            grad=opts.get("grad"),
            binarize=opts["binarize"],
            denormals=opts.get("denormals", "keep"),
            compile=compile,
            cuda_graphs=cuda_graphs or None,
            check_reference=False,
            progress=False,
            **length,
        )
        self.trainer = Trainer(assemble(config, data))
        self.samples_per_image = (config.particles or 1) * (config.groups or 1)
        self.build_seconds = 0.0

    def epoch(self) -> None:
        self.trainer.run_epoch()
        if self.trainer.parts.compiled is not None:
            self.build_seconds = self.trainer.parts.compiled.build_seconds


class HandwrittenPath:
    """The hand-written loss in a plain loop (:class:`pyro_vae.checks.HandwrittenVAE`): BCE +
    analytic KL, or for ``--estimator iwae`` the vectorised IWAE_K loss with its ``--grad``."""

    def __init__(self, data: ImageData, opts: dict) -> None:
        iwae = opts["estimator"] == "iwae"
        self.model = HandwrittenVAE(
            data,
            hidden=opts["hidden"],
            z_dim=opts["z_dim"],
            batch_size=opts["batch_size"],
            lr=opts["lr"],
            seed=opts["seed"],
            binarize=opts["binarize"],
            particles=opts.get("particles") or DEFAULT_PARTICLES if iwae else None,
            grad=opts.get("grad") or "standard" if iwae else "standard",
        )
        self.samples_per_image = self.model.particles or 1

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
    "pyro-vae": ("pyro-vae eager", lambda data, opts: PyroVAEPath(data, opts)),
    "pyro-vae-default": (
        "pyro-vae, no flags (a 100-epoch run: compiled by itself)",
        lambda data, opts: PyroVAEPath(data, opts, no_flags=True),
    ),
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
    "numpyro-scan": ("NumPyro SVI, lax.scan epoch", numpyro_paths.NumPyroScanPath),
    "numpyro-step": ("NumPyro SVI, jitted step", numpyro_paths.NumPyroStepPath),
}
CUDA_ONLY = {"pyro-vae-cuda-graphs"}
DEFAULT_PARTICLES = 50  # K of --particles for the importance-weighted estimators


def why_not(name: str, opts: dict) -> str | None:
    """Why path ``name`` cannot run with these options here (None: it can)."""
    if name in CUDA_ONLY and torch.device(opts["device"]).type != "cuda":
        return "needs a CUDA device"
    if name in numpyro_paths.PATH_NAMES:
        return numpyro_paths.why_not(opts)
    return None


def estimator_options(estimator: str, particles: int, grad: str) -> dict[str, Any]:
    """``particles`` for the importance-weighted estimators and ``grad`` for those that take
    one (None elsewhere); either set to other than its default where it does not apply is
    refused."""
    takes = ESTIMATORS.options(estimator) if estimator in ESTIMATORS else []
    weighted = "num_particles" in takes and estimator not in numpyro_paths.ELBO_ESTIMATORS
    given = {"particles": particles, "grad": grad}
    chosen = {"particles": particles if weighted else None}
    chosen["grad"] = grad if "grad" in takes else None
    for name, default in (("particles", DEFAULT_PARTICLES), ("grad", "standard")):
        if chosen[name] is None and given[name] != default:
            raise ValueError(
                f"--{name} does not apply to --estimator {estimator}: it is an option of the "
                f"importance-weighted estimators{' with a gradient estimator' * (name == 'grad')}"
            )
    return chosen


def choose_paths(named: Sequence[str] | None, opts: dict) -> tuple[list[str], list[str]]:
    """The paths to run: those named, or all that can run here, with one line per reason
    for those left out ("numpyro-scan, numpyro-step skipped: ..."). A named path that cannot
    run is refused."""
    reasons = {name: why_not(name, opts) for name in named or PATHS}
    refused = [f"{name} cannot run: {reasons[name]}" for name in named or [] if reasons[name]]
    if refused:
        raise ValueError("; ".join(refused))
    left_out: dict[str, list[str]] = {}
    for name, reason in reasons.items():
        if reason:
            left_out.setdefault(reason, []).append(name)
    skipped = [f"{', '.join(names)} skipped: {reason}" for reason, names in left_out.items()]
    return [name for name, reason in reasons.items() if not reason], skipped


def step_matmul_flops(
    data_dim: int, hidden: Sequence[int], z_dim: int, batch: int, particles: int = 1
) -> int:
    """Matrix-product FLOPs of one training step of the MLP VAE: each linear layer (in, out)
    costs 2 rows in out forward and twice that backward (the gradients with respect to its
    input and to its weight), 3 x 2 rows in out in all, with rows = ``batch`` in the encoder
    (data_dim -> hidden... -> 2 z_dim) and ``batch`` x ``particles`` in the decoder (z_dim ->
    reversed hidden -> data_dim). Elementwise work is left out, and so is the fact that
    autograd skips the first layer's gradient with respect to the data."""
    encoder = [data_dim, *hidden, 2 * z_dim]
    decoder = [z_dim, *reversed(hidden), data_dim]

    def products(sizes: list[int]) -> int:
        return sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    return 3 * 2 * batch * (products(encoder) + particles * products(decoder))


def epoch_matmul_flops(
    n: int, batch_size: int, data_dim: int, hidden: Sequence[int], z_dim: int, particles: int = 1
) -> int:
    """:func:`step_matmul_flops` summed over an epoch of ``n`` images: n // batch_size full
    batches and the last partial one."""
    full, rest = divmod(n, batch_size)
    step = step_matmul_flops(data_dim, hidden, z_dim, batch_size, particles)
    return full * step + step_matmul_flops(data_dim, hidden, z_dim, rest, particles)
