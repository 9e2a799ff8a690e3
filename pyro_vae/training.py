"""The SVI loop: data on the device, Pyro's ELBO as the loss, a run directory as the record.

Each step is stochastic variational inference: Pyro's estimator returns a differentiable
estimate of -ELBO_beta for the batch (``elbo.differentiable_loss(model, guide, x)``) and
``torch.optim.Adam`` steps every parameter of the VAE. The module owns its parameters, so the
optimizer does not depend on Pyro's global parameter store (a second VAE in the same process,
or a resumed one, trains its own tensors). ``pyro.infer.SVI`` drives ``vae.model`` /
``vae.guide`` just as well; the test suite checks that too.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from . import plots, runs
from .data import BINARIZATIONS, DATASETS, Binarizer, ImageData, load_dataset
from .evaluation import evaluate_elbo
from .likelihoods import LIKELIHOODS
from .model import VAE, build_vae
from .nets import NETWORKS
from .objectives import ESTIMATORS, KLWarmup, make_estimator
from .priors import PRIORS
from .reference import USES_ANALYTIC_KL, check_against_reference

# Training -ELBO is measured on at most this many training images per epoch (a fixed subset).
TRAIN_EVAL_IMAGES = 10_000


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as config.json."""

    dataset: str = "mnist-sample"
    data_dir: str | None = None
    binarize: str = "dynamic"
    network: str = "mlp"
    hidden: tuple[int, ...] = (400,)
    likelihood: str = "bernoulli"
    sigma: float = 0.1
    sigma_floor: float = 0.01
    prior: str = "normal"
    components: int = 10
    estimator: str = "mean-field"
    particles: int = 1
    beta: float = 1.0
    kl_warmup_epochs: float = 0.0
    z_dim: int = 16
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    device: str = "auto"
    seed: int = 0
    out: str = "runs/latest"
    check_reference: bool = True
    progress: bool = True
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        for name, ok, rule in [
            ("beta", self.beta >= 0, ">= 0"),
            ("particles", self.particles >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("z_dim", self.z_dim >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("kl_warmup_epochs", self.kl_warmup_epochs >= 0, ">= 0"),
            ("hidden", all(h >= 1 for h in self.hidden), "positive sizes"),
        ]:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)}")
        # unknown names fail here, before any data is read
        for registry, name in [
            (DATASETS, self.dataset),
            (NETWORKS, self.network),
            (LIKELIHOODS, self.likelihood),
            (PRIORS, self.prior),
            (ESTIMATORS, self.estimator),
        ]:
            registry.get(name)
        if self.binarize not in BINARIZATIONS:
            raise ValueError(
                f"unknown binarization {self.binarize!r}; choose one of: {', '.join(BINARIZATIONS)}"
            )

    def model_options(self) -> dict[str, Any]:
        return dict(
            network=self.network,
            likelihood=self.likelihood,
            prior=self.prior,
            z_dim=self.z_dim,
            beta=self.beta,
            hidden=self.hidden,
            sigma=self.sigma,
            sigma_floor=self.sigma_floor,
            components=self.components,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


METRIC_FIELDS = [
    "epoch",
    "beta",
    "train_loss",
    "train_neg_elbo",
    "test_neg_elbo",
    "test_distortion",
    "test_rate",
    "train_seconds",
    "eval_seconds",
]


@dataclass
class TrainResult:
    vae: VAE
    summary: dict[str, Any]
    metrics: list[dict[str, float]] = field(default_factory=list)


def train(config: TrainConfig, data: ImageData | None = None) -> TrainResult:
    """Train a VAE as ``config`` says and leave a complete run directory in ``config.out``."""
    device = resolve_device(config.device)
    pyro.set_rng_seed(config.seed)
    pyro.enable_validation(False)  # checks are done up front; keep the step lean
    if data is None:
        data = load_dataset(config.dataset, config.data_dir)
    data = data.to(device)
    binarizer = Binarizer(config.binarize, data, seed=config.seed)
    vae = build_vae(data.shape, **config.model_options()).to(device)
    vae.likelihood.check_data(binarizer.test_x)
    vae.likelihood.check_data(binarizer.train_x())

    out = Path(config.out)
    (out / runs.FIGURES).mkdir(parents=True, exist_ok=True)
    runs.write_json(out / runs.CONFIG, dataclasses.asdict(config))

    n_train = data.train_x.shape[0]
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    schedule = KLWarmup(config.beta, round(config.kl_warmup_epochs * steps_per_epoch))
    elbo = make_estimator(config.estimator, config.particles)
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.lr)
    analytic = USES_ANALYTIC_KL[config.estimator]

    reference_check = None
    if config.check_reference:
        vae.beta = schedule(0)
        x0 = binarizer.train_x()[: config.batch_size]
        pyro_loss, ref_loss = check_against_reference(
            vae, make_estimator(config.estimator), x0, analytic
        )
        reference_check = {
            "pyro_loss": pyro_loss,
            "reference_loss": ref_loss,
            "batch_size": int(x0.shape[0]),
        }

    eval_generator = torch.Generator().manual_seed(config.seed)
    train_eval_idx = torch.randperm(n_train, generator=eval_generator)[:TRAIN_EVAL_IMAGES]
    train_eval_idx = train_eval_idx.to(device)
    perm_generator = torch.Generator(device=device).manual_seed(config.seed)
    log = runs.MetricsLog(out / runs.METRICS, METRIC_FIELDS)
    metrics: list[dict[str, float]] = []
    step = 0
    bar = tqdm(range(config.epochs), desc="train", unit="epoch", disable=not config.progress)
    try:
        for epoch in bar:
            vae.train()
            x_epoch = binarizer.train_x()
            perm = torch.randperm(n_train, generator=perm_generator, device=device)
            _sync(device)
            t0 = time.perf_counter()
            total = torch.zeros((), device=device)
            for start in range(0, n_train, config.batch_size):
                vae.beta = schedule(step)
                x = x_epoch[perm[start : start + config.batch_size]]
                loss = elbo.differentiable_loss(vae.model, vae.guide, x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach()
                step += 1
            _sync(device)
            t1 = time.perf_counter()
            vae.eval()
            test = evaluate_elbo(vae.model, vae.guide, binarizer.test_x, config.eval_batch_size)
            train_bound = evaluate_elbo(
                vae.model, vae.guide, x_epoch[train_eval_idx], config.eval_batch_size
            )
            t2 = time.perf_counter()
            train_loss = total.item() / n_train
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"the training loss became {train_loss} in epoch {epoch + 1}; "
                    "try a lower --lr, or a larger --sigma-floor for gaussian-learned"
                )
            row = {
                "epoch": epoch + 1,
                "beta": vae.beta,
                "train_loss": train_loss,
                "train_neg_elbo": train_bound.neg_elbo,
                **test.as_dict("test_"),
                "train_seconds": t1 - t0,
                "eval_seconds": t2 - t1,
            }
            log.append(row)
            metrics.append(row)
            bar.set_postfix(train=f"{train_loss:.2f}", test=f"{test.neg_elbo:.2f}")
            runs.save_checkpoint(
                out / runs.CHECKPOINT,
                {
                    "model": vae.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1,
                    "step": step,
                    "config": dataclasses.asdict(config),
                },
            )
    finally:
        log.close()
        bar.close()

    summary = _summary(config, device, data, metrics, reference_check)
    runs.write_json(out / runs.SUMMARY, summary)
    make_figures(
        vae,
        binarizer.test_x,
        data.shape,
        metrics,
        out / runs.FIGURES,
        title=f"{config.dataset}: {config.likelihood} / {config.prior} / "
        f"{config.estimator}, beta={config.beta}, z={config.z_dim}",
    )
    return TrainResult(vae, summary, metrics)


def _summary(
    config: TrainConfig,
    device: torch.device,
    data: ImageData,
    metrics: list[dict[str, float]],
    reference_check: dict | None,
) -> dict[str, Any]:
    last = metrics[-1]
    # the first epoch carries one-off start-up costs; leave it out of the timing when we can
    timed = metrics[1:] or metrics
    return {
        "test_neg_elbo": last["test_neg_elbo"],
        "test_distortion": last["test_distortion"],
        "test_rate": last["test_rate"],
        "train_neg_elbo": last["train_neg_elbo"],
        "best_test_neg_elbo": min(r["test_neg_elbo"] for r in metrics),
        "seconds_per_epoch": sum(r["train_seconds"] for r in timed) / len(timed),
        "images_per_second": data.train_x.shape[0]
        * len(timed)
        / sum(r["train_seconds"] for r in timed),
        "epochs": int(last["epoch"]),
        "num_train": int(data.train_x.shape[0]),
        "num_test": int(data.test_x.shape[0]),
        "device": str(device),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "threads": torch.get_num_threads(),
        "reference_check": reference_check,
        "units": "nats per image",
    }


def make_figures(
    vae: VAE,
    test_x: torch.Tensor,
    shape: tuple[int, ...],
    metrics: list[dict[str, float]],
    directory: Path,
    title: str = "",
) -> None:
    vae.eval()
    plots.loss_curves(metrics, directory / "loss_curves.png", title=title)
    inputs = test_x[torch.linspace(0, test_x.shape[0] - 1, 30, device=test_x.device).long()]
    plots.reconstructions(inputs, vae.reconstruct(inputs), shape, directory / "reconstructions.png")
    with torch.random.fork_rng(devices=[test_x.device] if test_x.is_cuda else []):
        torch.manual_seed(0)
        plots.samples(vae.sample(100), shape, directory / "prior_samples.png")
