"""The configuration of a training run, checked in full before anything starts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .conditional import CONTEXTS
from .data import BINARIZATIONS, DATASETS
from .guides import GUIDES
from .iwae import GRADIENT_ESTIMATORS
from .likelihoods import LIBRARY_OPTIONS, LIKELIHOODS
from .models import MODELS
from .nets import NETWORKS
from .objectives import ESTIMATORS
from .priors import PRIORS

# fp32: full precision. tf32: CUDA matrix products in TensorFloat-32 (float32 storage).
# bf16: the step's forward pass under bfloat16 autocast (matrix products in bfloat16).
PRECISIONS = ("fp32", "tf32", "bf16")


class ConfigError(ValueError):
    """An option with a value the run cannot use; the message names the option."""


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as config.json."""

    dataset: str = "mnist-sample"
    data_dir: str | None = None
    binarize: str = "auto"  # dynamic for binary likelihoods, none for the others
    network: str = "mlp"
    hidden: tuple[int, ...] = (400,)
    likelihood: str = "bernoulli"
    sigma: float = 0.1
    sigma_floor: float = 0.01
    library: str = "none"
    beta_squeeze: float = 1e-3
    prior: str = "normal"
    components: int = 10
    pseudo_inputs: int = 500
    model: str = "vae"  # or two-layer (Burda et al.'s two stochastic layers)
    context: str = "none"  # label or top-half: a conditional VAE
    z2_dim: int = 50
    upper_hidden: tuple[int, ...] = (100, 100)
    guide: str = "diagonal"
    rank: int = 2
    flows: int = 2
    flow_hidden: int = 0
    estimator: str = "mean-field"
    particles: int = 1
    grad: str = "standard"
    free_bits: float = 0.5
    capacity: float = 25.0
    capacity_gamma: float = 100.0
    capacity_epochs: float = 0.0
    beta: float = 1.0
    kl_warmup_epochs: float = 0.0
    z_dim: int = 16
    autoencoder: bool = False
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    device: str = "auto"
    seed: int = 0
    out: str = "runs/latest"
    checkpoint_every: int = 0
    compile: bool = False
    cuda_graphs: bool = False
    precision: str = "fp32"
    check_reference: bool = True
    progress: bool = True
    eval_batch_size: int = 1000

    # Options that may differ when a run is resumed: they do not change what is computed
    # (``epochs`` extends the run; ``device`` moves it, which ends bitwise equality).
    RESUMABLE = ("epochs", "device", "out", "progress", "check_reference", "checkpoint_every")

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        self.upper_hidden = tuple(int(h) for h in self.upper_hidden)
        for name, ok, rule in [
            ("beta", self.beta >= 0, ">= 0"),
            ("particles", self.particles >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("z_dim", self.z_dim >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("kl_warmup_epochs", self.kl_warmup_epochs >= 0, ">= 0"),
            ("hidden", len(self.hidden) > 0 and all(h >= 1 for h in self.hidden), "positive"),
            ("sigma", self.sigma > 0, "> 0"),
            ("sigma_floor", self.sigma_floor > 0, "> 0"),
            ("components", self.components >= 1, ">= 1"),
            ("pseudo_inputs", self.pseudo_inputs >= 1, ">= 1"),
            ("rank", self.rank >= 1, ">= 1"),
            ("z2_dim", self.z2_dim >= 1, ">= 1"),
            (
                "upper_hidden",
                len(self.upper_hidden) > 0 and all(h >= 1 for h in self.upper_hidden),
                "positive",
            ),
            ("flows", self.flows >= 1, ">= 1"),
            ("flow_hidden", self.flow_hidden >= 0, ">= 0 (0: twice z_dim)"),
            ("beta_squeeze", 0 < self.beta_squeeze < 0.5, "in (0, 0.5)"),
            ("library", self.library in LIBRARY_OPTIONS, f"one of {', '.join(LIBRARY_OPTIONS)}"),
            ("free_bits", self.free_bits >= 0, ">= 0"),
            ("capacity", self.capacity >= 0, ">= 0"),
            ("capacity_gamma", self.capacity_gamma > 0, "> 0"),
            ("capacity_epochs", self.capacity_epochs >= 0, ">= 0"),
            ("checkpoint_every", self.checkpoint_every >= 0, ">= 0 (0: at epoch ends only)"),
            ("eval_batch_size", self.eval_batch_size >= 1, ">= 1"),
        ]:
            if not ok:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be {rule}, got {getattr(self, name)}")
        # unknown names fail here, before any data is read
        for registry, name in [
            (DATASETS, self.dataset),
            (NETWORKS, self.network),
            (LIKELIHOODS, self.likelihood),
            (PRIORS, self.prior),
            (GUIDES, self.guide),
            (MODELS, self.model),
            (ESTIMATORS, self.estimator),
        ]:
            registry.get(name)
        data_kind = LIKELIHOODS.get(self.likelihood).data_kind
        if self.binarize == "auto":
            self.binarize = "dynamic" if data_kind == "binary" else "none"
        if self.binarize not in BINARIZATIONS:
            raise ConfigError(
                f"unknown binarization {self.binarize!r}; choose one of: auto, "
                f"{', '.join(BINARIZATIONS)}"
            )
        if data_kind == "counts" and self.binarize != "none":
            raise ConfigError(f"--likelihood {self.likelihood} models counts: use --binarize none")
        if self.grad not in GRADIENT_ESTIMATORS:
            raise ConfigError(
                f"unknown gradient estimator {self.grad!r}; choose one of: "
                f"{', '.join(GRADIENT_ESTIMATORS)}"
            )
        if self.grad != "standard" and self.estimator != "iwae":
            raise ConfigError(f"--grad {self.grad} applies to --estimator iwae only")
        if self.model == "two-layer":
            for ok, rule in [
                (
                    self.estimator in ("trace", "iwae"),
                    "--estimator trace or iwae (z2 depends on "
                    "z1 in the guide, which TraceMeanField_ELBO's analytic KLs cannot take)",
                ),
                (self.network == "mlp", "--network mlp"),
                (self.guide == "diagonal", "--guide diagonal (each layer is Gaussian)"),
                (self.prior != "vamp", "a prior other than vamp"),
                (not self.autoencoder, "no --autoencoder"),
            ]:
                if not ok:
                    raise ConfigError(f"--model two-layer needs {rule}")
        if self.context not in CONTEXTS:
            raise ConfigError(
                f"unknown context {self.context!r}; choose one of: {', '.join(CONTEXTS)}"
            )
        if self.context != "none":
            for ok, rule in [
                (self.model == "vae", "--model vae"),
                (self.network == "mlp", "--network mlp"),
                (not self.autoencoder, "no --autoencoder"),
            ]:
                if not ok:
                    raise ConfigError(f"--context {self.context} needs {rule}")
        if self.guide == "iaf" and self.z_dim < 2:
            raise ConfigError("--guide iaf needs --z-dim >= 2")
        if self.autoencoder and self.guide != "diagonal":
            raise ConfigError("--guide means nothing for --autoencoder (its code is a point)")
        if self.estimator in ("free-bits", "capacity"):
            if self.guide != "diagonal":
                raise ConfigError(
                    f"--estimator {self.estimator} needs the KL per dimension: --guide diagonal"
                )
            if self.particles != 1:
                raise ConfigError(f"--estimator {self.estimator} uses one particle")
            if self.prior not in ("normal", "learned-normal"):
                raise ConfigError(
                    f"--estimator {self.estimator} needs the KL per dimension in "
                    "closed form: --prior normal or learned-normal"
                )
        if self.autoencoder and (self.beta != 1.0 or self.kl_warmup_epochs):
            raise ConfigError("--beta and --kl-warmup-epochs mean nothing for --autoencoder")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}"
            )
        if self.precision == "bf16" and self.compile:
            raise ConfigError("--precision bf16 runs the eager step; drop --compile")
        if self.cuda_graphs and not self.compile:
            raise ConfigError("--cuda-graphs replays the compiled step: add --compile")
        if self.cuda_graphs and self.device == "cpu":
            raise ConfigError("--cuda-graphs needs a CUDA device, not --device cpu")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"unknown device {self.device!r}; choose auto, cpu or cuda")

    def estimator_options(self, steps_per_epoch: int) -> dict[str, Any]:
        return dict(
            free_bits=self.free_bits,
            capacity=self.capacity,
            capacity_gamma=self.capacity_gamma,
            capacity_steps=round(self.capacity_epochs * steps_per_epoch),
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
            library=self.library,
            beta_squeeze=self.beta_squeeze,
            pseudo_inputs=self.pseudo_inputs,
            model=self.model,
            context=self.context,
            z2_dim=self.z2_dim,
            upper_hidden=self.upper_hidden,
            guide=self.guide,
            rank=self.rank,
            flows=self.flows,
            flow_hidden=self.flow_hidden,
            autoencoder=self.autoencoder,
        )

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["upper_hidden"] = list(self.upper_hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**d)

    def differences(self, other: TrainConfig) -> list[str]:
        """Options (other than the resumable ones) whose values differ, as 'name: a != b'."""
        mine, theirs = self.as_dict(), other.as_dict()
        return [
            f"{k}: {mine[k]!r} != {theirs[k]!r}"
            for k in mine
            if k not in self.RESUMABLE and mine[k] != theirs[k]
        ]
