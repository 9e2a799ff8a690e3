"""Every option of a training run, declared once, and the configuration they make.

Each field of :class:`TrainConfig` is one option: its name, type and default are the field's,
and :func:`~pyro_vae.training.schema.option` adds the rest: the help text, the group it belongs
to (data, model, estimator, schedule, run), where it applies and its check. The command line
(``pyro-vae train``'s flags), config.json, ``--resume``'s comparison and the builders all read
these declarations (:func:`options`); nothing about an option is written anywhere else.

Where an option applies:
- ``part=True``: where a chosen part takes it. A model option applies when the model builder
  or one of the parts it is assembled from (network, likelihood, prior, guide) has it as an
  option (``--sigma`` with ``--likelihood gaussian``, ``--rank`` with ``--guide low-rank``,
  ``--z2-dim`` with ``--model two-layer``); an estimator option when the chosen estimator
  takes it (``--free-bits`` with ``--estimator free-bits``); a data option when the dataset
  does (``--data-dir`` for the datasets read from files). A new family with a new option
  therefore needs one declaration here and nothing else.
- ``applies=``: an explicit condition (``--cuda-graphs`` needs ``--compile``).
An option that does not apply is ``None`` in the config. Set to anything but its default where
it does not apply, it is refused with a message that says where it does.

Checks of one part (a positive ``--sigma``) are the parts' own, run as the config builds the
model before any data is read. Rules tying two groups are :data:`RULES`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..data import BINARIZATIONS, CONTEXTS, DATASETS
from ..data.sources import IMAGE_FITS, LAYOUTS, STREAMING, valid_size
from ..inference import ESTIMATORS, IWAE_GRADIENTS
from ..model import DISCRETE_SITES, GUIDES, LIKELIHOODS, MODELS, NETWORKS, PRIORS
from ..model.invariant import INVARIANCE_CHOICES
from ..model.likelihoods import LIBRARY_OPTIONS
from .config_record import ConfigRecord
from .denormals import DENORMALS
from .rules import (
    RULES,
    automatic_binarization,
    automatic_dataset,
    automatic_estimator,
    brings_data,
    is_factory,
)
from .schema import (
    POSITIVE,
    POSITIVE_SIZES,
    Check,
    ConfigError,  # noqa: F401 (raised by the config's checks; imported from here)
    Option,
    at_least,
    option,
)
from .trackers import ERROR_CHOICES, TRACKERS

PRECISIONS = ("fp32", "tf32", "bf16")  # tf32: CUDA matrix products; bf16: autocast forward
OWN_DATA: dict[str, Any] = {"applies": brings_data, "when": "--data or data given from Python"}
TRACKED: dict[str, Any] = {"applies": lambda c: c.tracker != "none", "when": "--tracker NAME"}


@dataclass
class TrainConfig(ConfigRecord):
    """Everything that defines a run; saved as config.json. See the module doc."""

    # --- data ----------------------------------------------------------------------------------
    dataset: str = option(
        "auto", "the data: a built-in set, or file (your --data)", "data", choices=DATASETS,
        automatic=automatic_dataset,
    )  # fmt: skip
    data: str | None = option(
        None, "your data: a folder of images (class sub-folders: labels), .npy, .npz, HDF5, "
        "AnnData .h5ad, or a CSV/TSV/Parquet table", "data", part=True,
    )  # fmt: skip
    data_key: str | None = option(
        None, "the array of rows in .npz / HDF5, the layer of .h5ad (default X), the label "
        "column of a table", "data", part=True,
    )  # fmt: skip
    layout: str | None = option(
        "auto", "images stored channels-first (nchw) or channels-last (nhwc); auto: told "
        "apart where only one can be, else asked for", "data", choices=LAYOUTS, part=True,
    )  # fmt: skip
    image_size: int | None = option(
        None, "image folders: bring every image to this size (see --image-fit)", "data",
        check=at_least(1), part=True, type=int,
    )  # fmt: skip
    image_fit: str | None = option(
        "crop", "with --image-size: crop (shorter side to the size, then the centre) or "
        "resize (both sides)", "data", choices=IMAGE_FITS, part=True,
    )  # fmt: skip
    skip_bad: bool | None = option(
        False, "skip unreadable images or bad rows, counting them (else: stop, naming the "
        "first)", "data", part=True,
    )  # fmt: skip
    test_fraction: float | None = option(
        0.1, "data with no test split of their own: the share of rows held out (chosen by "
        "--seed, recorded)", "data", check=Check(lambda f: 0 < f < 1, "in (0, 1)"), **OWN_DATA,
    )  # fmt: skip
    stream: str | None = option(
        "auto", "auto: stream batches from disk when the data as float32 exceed "
        "--memory-budget, else hold them on the device; always; never", "data",
        choices=STREAMING, **OWN_DATA,
    )  # fmt: skip
    memory_budget: str | None = option(
        None, "memory the data may take on the device, e.g. 2G or 500M (default: half the "
        "free memory)", "data", check=Check(valid_size, "a size such as 2G or 500M"),
        resumable=True, **OWN_DATA)  # fmt: skip
    workers: int | None = option(None, "streamed data: DataLoader workers reading ahead (default: "
        "2 where reads decode files, 0 for a memory map)", "data", check=at_least(0), type=int,
        resumable=True, **OWN_DATA)  # fmt: skip
    data_dir: str | None = option(
        None, "IDX directory (mnist, fashion-mnist) or the .npz file (npz)", "data", part=True
    )
    binarize: str = option(
        "auto",
        "dynamic: a fresh Bernoulli draw each epoch; static: one fixed draw",
        "data",
        choices=BINARIZATIONS,
        automatic=automatic_binarization,
    )
    labels: int | None = option(
        100, "m2: labelled training images (class-balanced, chosen by --seed)", "data",
        check=at_least(0), applies=lambda c: c.model == "m2", when="--model m2",
    )  # fmt: skip
    # --- model -----------------------------------------------------------------------------------
    model: str = option(
        "vae", "vae; two-layer (two stochastic layers, Burda et al. 2016); joint (a class c "
        "and z, unsupervised); m2 (semi-supervised, Kingma et al. 2014); invariant (rotation "
        "and shift apart from the content, Bepler et al. 2019)", "model",
        choices=MODELS,
    )  # fmt: skip
    classes: int | None = option(
        10, "joint: values of the class variable c", "model", check=at_least(2), part=True
    )
    discrete: str | None = option(
        "enumerate", "m2, joint: the class site's estimator: enumerate (exact sum), score "
        "(score function with a learned baseline) or relaxed (Gumbel-softmax, biased)",
        "model", choices=DISCRETE_SITES, part=True,
    )  # fmt: skip
    temperature: float | None = option(
        1.0, "relaxed: the Gumbel-softmax temperature at the start", "model", part=True
    )
    baseline_hidden: int | None = option(
        100, "score: hidden units of the baseline network b(x)", "model",
        check=at_least(1), part=True,
    )  # fmt: skip
    classifier_weight: float | None = option(
        10.0, "m2: alpha of the classification term alpha N E_labelled[log q(y|x)] (Kingma et "
        "al. 2014: 0.1, over far longer training)", "model", check=at_least(0), part=True,
    )  # fmt: skip
    context: str | None = option(
        "none", "a conditional VAE given the label or the top half of the image", "model",
        choices=CONTEXTS, part=True,
    )  # fmt: skip
    network: str | None = option("mlp", "encoder and decoder", "model", choices=NETWORKS, part=True)
    hidden: tuple[int, ...] | None = option(
        (400,), "MLP hidden sizes", "model", check=POSITIVE_SIZES, part=True
    )
    z_dim: int = option(16, "latent dimensions (z1 for two-layer)", "model", check=at_least(1))
    z2_dim: int | None = option(50, "two-layer: size of z2", "model", check=at_least(1), part=True)
    upper_hidden: tuple[int, ...] | None = option(
        (100, 100), "two-layer: hidden sizes between z1 and z2", "model",
        check=POSITIVE_SIZES, part=True,
    )  # fmt: skip
    invariances: str | None = option(
        "rotation+translation", "invariant: the pose inferred apart from the content", "model",
        choices=INVARIANCE_CHOICES, part=True,
    )  # fmt: skip
    rotations: int | None = option(
        0, "invariant: R turns 2 pi r / R searched, summed out exactly (theta: the offset); 0: "
        "one Gaussian angle", "model", check=at_least(0), part=True)  # fmt: skip
    theta_prior: float | None = option(
        None, "invariant: sd of the rotation prior, radians (default pi; pi / R with "
        "--rotations R)", "model", check=POSITIVE, part=True, type=float)  # fmt: skip
    dx_prior: float | None = option(
        0.1, "invariant: sd of the shift prior, in half-widths of the image", "model",
        check=POSITIVE, part=True,
    )  # fmt: skip
    likelihood: str = option("bernoulli", "p(x|z)", "model", choices=LIKELIHOODS)
    sigma: float | None = option(0.1, "fixed sigma of gaussian", "model", part=True)
    sigma_floor: float | None = option(
        0.01, "lower bound on the learned scale of gaussian-learned, laplace", "model", part=True
    )
    library: str | None = option(
        "none", "count likelihoods: none (mean = exp(decoder)) or observed (library size x "
        "softmax(decoder))", "model", choices=LIBRARY_OPTIONS, part=True,
    )  # fmt: skip
    beta_squeeze: float | None = option(
        1e-3, "beta models x' = eps + (1 - 2 eps) x; this is eps", "model", part=True
    )
    prior: str = option("normal", "p(z)", "model", choices=PRIORS)
    components: int | None = option(10, "mixture prior: components", "model", part=True)
    pseudo_inputs: int | None = option(500, "VampPrior: learned pseudo-inputs", "model", part=True)
    guide: str | None = option("diagonal", "q(z|x)", "model", choices=GUIDES, part=True)
    rank: int | None = option(2, "low-rank guide: rank of the low-rank part", "model", part=True)
    flows: int | None = option(2, "iaf guide: flow steps", "model", part=True)
    flow_hidden: int | None = option(
        0, "iaf guide: hidden units per MADE (0: twice z_dim)", "model", part=True
    )
    beta: float = option(1.0, "KL weight (beta-VAE); 0 allowed", "model", check=at_least(0))
    beta_discrete: float | None = option(
        1.0, "m2, joint: KL weight of the class site", "model", check=at_least(0), part=True
    )
    autoencoder: bool | None = option(
        False, "the deterministic autoencoder with the same networks", "model", part=True
    )
    # --- estimator ---------------------------------------------------------------------------
    estimator: str = option(
        "auto", "the objective (trace: Trace_ELBO, mean-field: TraceMeanField_ELBO)",
        "estimator", choices=ESTIMATORS, automatic=automatic_estimator,
    )  # fmt: skip
    particles: int | None = option(
        None, "samples per image, K, per group for miwae, piwae (default: the estimator's, 5 "
        "for the importance-weighted ones, else 1)",
        "estimator", check=at_least(1), part=True, param="num_particles", type=int,
    )  # fmt: skip
    grad: str | None = option(
        "standard", "iwae, miwae: the gradient estimator", "estimator",
        choices=IWAE_GRADIENTS, part=True,
    )  # fmt: skip
    alpha: float | None = option(
        0.5, "renyi: the order alpha of the VR bound, in [0, 1) (0 is IWAE)",
        "estimator", part=True,
        check=Check(lambda a: 0 <= a < 1, "in [0, 1) (1 is the ELBO: --estimator trace)"),
    )  # fmt: skip
    groups: int | None = option(
        4, "miwae, piwae: M, groups of K particles (M K samples per image)", "estimator",
        check=at_least(1), part=True,
    )  # fmt: skip
    ciwae_mix: float | None = option(
        0.5, "ciwae: weight of the ELBO against IWAE (1: the ELBO, 0: IWAE)", "estimator",
        check=Check(lambda m: 0 <= m <= 1, "in [0, 1]"), part=True, param="mix",
    )  # fmt: skip
    free_bits: float | None = option(
        0.5, "free-bits: KL floor per dimension, nats", "estimator", part=True
    )
    capacity: float | None = option(25.0, "capacity: target KL C, nats", "estimator", part=True)
    capacity_gamma: float | None = option(
        100.0, "capacity: weight gamma of |KL - C|", "estimator", part=True
    )
    # --- schedules: values raised linearly over the first epochs --------------------------------
    capacity_epochs: float | None = option(
        0.0, "capacity: epochs to raise C from 0", "schedule", check=at_least(0),
        applies=lambda c: "capacity" in ESTIMATORS.options(c.estimator),
        when="--estimator capacity",
    )  # fmt: skip
    temperature_epochs: float | None = option(
        10.0, "relaxed: epochs to lower the temperature geometrically to --temperature-floor",
        "schedule", check=at_least(0), applies=lambda c: c.discrete == "relaxed",
        when="--discrete relaxed",
    )  # fmt: skip
    temperature_floor: float | None = option(
        0.5, "relaxed: the lowest temperature (Jang et al. 2017: 0.5)", "schedule",
        check=POSITIVE, applies=lambda c: c.discrete == "relaxed", when="--discrete relaxed",
    )  # fmt: skip
    kl_warmup_epochs: float | None = option(
        0.0, "raise beta linearly from 0 over this many epochs", "schedule",
        check=at_least(0), applies=lambda c: not c.autoencoder, when="a VAE (not --autoencoder)",
    )  # fmt: skip
    # --- run ---------------------------------------------------------------------------------
    epochs: int = option(100, "passes over the training set", "run", check=at_least(1),
                         resumable=True)  # fmt: skip
    batch_size: int = option(128, "images per SVI step", "run", check=at_least(1))
    lr: float = option(1e-3, "Adam learning rate", "run", check=POSITIVE)
    device: str = option(
        "auto", "auto, cpu or cuda[:N]", "run", resumable=True,
        check=Check(lambda d: d in ("auto", "cpu") or d.startswith("cuda"), "auto, cpu or cuda"),
    )  # fmt: skip
    precision: str = option(
        "fp32", "fp32, tf32 (CUDA matrix products) or bf16 (autocast)", "run", choices=PRECISIONS
    )
    denormals: str = option("flush", "flush: floats under 1.2e-38 read and written as 0 on "
                            "the CPU, as in JAX (faster); keep: IEEE", "run",
                            choices=DENORMALS)  # fmt: skip
    compile: bool = option(
        False, "trace the Pyro step once and run it as a compiled graph (TorchInductor)", "run"
    )
    compile_from: int = option(
        10_000, "compile the step (as --compile) when the run takes at least this many steps "
        "and its model and estimator can be compiled; 0: only with --compile", "run",
        check=at_least(0), resumable=True,
    )  # fmt: skip
    cuda_graphs: bool | None = option(
        False, "with --compile on CUDA: replay the compiled step as a CUDA graph", "run",
        applies=lambda c: c.compile, when="--compile",
    )  # fmt: skip
    seed: int = option(0, "seeds Pyro, torch and the batches", "run",
                       check=Check(lambda s: 0 <= s < 2**32, "in [0, 2**32)"))  # fmt: skip
    out: str = option("runs/latest", "run directory", "run", resumable=True,
                      check=Check(lambda p: bool(p.strip()), "a directory path"))  # fmt: skip
    checkpoint_every: int = option(
        0, "also checkpoint every this many steps (0: at epoch ends only)", "run",
        check=at_least(0), resumable=True,
    )  # fmt: skip
    eval_batch_size: int = option(1000, "images per batch when measuring", "run", check=at_least(1))
    check_reference: bool = option(
        True, "compare Pyro's loss with the hand-written loss on the first batch", "run",
        flag="--skip-reference-check", resumable=True,
    )  # fmt: skip
    progress: bool = option(
        True, "the banner, and progress as it trains (a bar on a terminal, else lines)", "run",
        flag="--no-progress", resumable=True,
    )  # fmt: skip
    tensorboard: bool = option(
        True, "TensorBoard event files in RUN_DIR/tensorboard", "run", flag="--no-tensorboard",
        resumable=True,
    )  # fmt: skip
    tracker: str = option("none", "an experiment tracker the run is sent to as it trains",
                          "run", choices=TRACKERS, resumable=True)  # fmt: skip
    tracking_uri: str | None = option(
        None, "where the tracker keeps its runs (unset: as the tracker chooses)", "run",
        resumable=True, **TRACKED)  # fmt: skip
    experiment: str | None = option(
        None, "the tracker's experiment the run goes into (unset: as the tracker chooses)",
        "run", check=Check(lambda e: bool(e.strip()), "a name"), resumable=True,
        **TRACKED)  # fmt: skip
    tracker_errors: str | None = option(
        "stop", "a tracker out of reach at the start: stop (before training) or warn (train "
        "without it)", "run", choices=ERROR_CHOICES, resumable=True, **TRACKED)  # fmt: skip
    # --- not options: what the user's own parts take, and the code that made the run ---------
    # options of parts registered by the user (a plug-in likelihood's ``df``, a model
    # factory's ``channels``): no field declares them; each must be taken by a chosen part
    part_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    # the modules outside the package that define the run's parts (pyro_vae.plugins records):
    # read back only to say what to name again, never imported from here
    plugins: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # where the data came from (pyro_vae.data.sources.DataSource.record, with how it was read):
    # a command that reads the run opens the data again and compares
    data_source: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self._choose_automatic()  # first: what applies may depend on it
        for name, opt in options().items():
            self._settle(name, opt)
        self._check_part_options()
        for rule in RULES:
            rule(self)
        self._try_building()

    @classmethod
    def of(cls, **given: Any) -> TrainConfig:
        """The config of ``given`` options, those of the user's own parts among them: a name
        that no field declares goes to :attr:`part_options` (checked to be taken by a chosen
        part). A ``MODULE:FACTORY`` model's parameter that is also a declared option
        (``z_dim``) keeps the factory's own default unless given."""
        model = given.get("model")
        if is_factory(model) and model in MODELS:
            own = MODELS.defaults(model)
            given = {k: v for k, v in own.items() if k in _FIELDS and v is not None} | given
        declared = {k: v for k, v in given.items() if k in _FIELDS}
        extra = {k: v for k, v in given.items() if k not in _FIELDS}
        return cls(**declared, part_options={**declared.pop("part_options", {}), **extra})

    # --- what the builders read -----------------------------------------------------------------

    def group(self, group: str) -> dict[str, Any]:
        """The options of ``group`` that apply to this run, under the builders' names."""
        return {
            opt.param or name: getattr(self, name)
            for name, opt in options().items()
            if opt.group == group and getattr(self, name) is not None
        }

    def model_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`pyro_vae.model.build_model`: the model options that
        apply, and the options of the user's own parts."""
        return {**self.group("model"), **self.part_options}

    def estimator_options(self) -> dict[str, Any]:
        """Keyword arguments of the estimator (``num_particles`` only where given: otherwise
        the estimator's own default, 5 for the importance-weighted ones, 1 for the others)."""
        return {k: v for k, v in self.group("estimator").items() if k != "estimator"}


def options() -> dict[str, Option]:
    """Every option of a run, in declaration order."""
    return {f.name: f.metadata["option"] for f in dataclasses.fields(TrainConfig) if f.metadata}


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
