"""Assembling a run from its options: the device and processes, the data, the model, the
estimator, the step, the optimizer and the schedules. Nothing here trains or writes a file."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import pyro
import torch
from pyro.infer import ELBO

from ..data import Binarizer, ImageData, labelled_rows
from ..inference import ESTIMATORS, GeometricRamp, KLWarmup, LinearRamp, sync_free
from ..model import LIKELIHOODS, VAE, build_model
from ..model.program import PyroProgram, as_vae
from ..model.program_check import check_program
from .compiled import CompiledStep
from .devices import resolve_device
from .distributed import Cluster, join
from .feeds import ResidentFeed, StreamBinarizer, StreamFeed, check_streamed
from .option_checks import GIVEN_MODEL
from .options import ConfigError, TrainConfig
from .rules import factory_data_kind, is_factory
from .run_data import RunData, open_run_data


@dataclass(frozen=True)
class Schedule:
    """A value raised over the first steps (a :class:`LinearRamp`) and where it is set."""

    ramp: Callable[[int], float]  # a LinearRamp or a GeometricRamp: the value at a step
    apply: Callable[[float], None]

    def update(self, step: int) -> None:
        self.apply(self.ramp(step))


@dataclass
class Assembly:
    """The parts of a run, ready for the loop."""

    config: TrainConfig
    device: torch.device
    cluster: Cluster
    data: ImageData  # tensors on the device, or LazyRows standing for streamed rows
    run_data: RunData
    binarizer: Binarizer | StreamBinarizer
    feed: ResidentFeed | StreamFeed
    vae: VAE
    estimator: ELBO  # the estimator as chosen (Pyro's TraceMeanField_ELBO, say)
    step_estimator: ELBO  # its sync-free twin, which the step runs: no host synchronisation
    compiled: CompiledStep | None
    optimizer: torch.optim.Optimizer
    schedules: list[Schedule]
    steps_per_epoch: int
    global_batch: int  # images per step over every process


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam with the fused implementation (one kernel for all parameters), where available."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # an older torch, or a device without the fused kernel
        return torch.optim.Adam(params, lr=lr, foreach=True)


def data_kind(config: TrainConfig, vae: VAE | None) -> str | None:
    """The kind of data the run's likelihood reads ("counts", "binary", ...): the given VAE's,
    a factory's as it builds it, or the named likelihood's."""
    if vae is not None:
        return getattr(getattr(vae, "likelihood", None), "data_kind", None)
    if config.model == GIVEN_MODEL:  # (not given again: model_of says to pass it)
        return None
    if config.likelihood is None or is_factory(config.model):
        return factory_data_kind(config)
    return LIKELIHOODS.get(config.likelihood).data_kind


def load_data(
    config: TrainConfig, device: torch.device, data: Any = None, vae: VAE | None = None
) -> RunData:
    """The run's data on ``device`` (:func:`~pyro_vae.training.run_data.open_run_data`);
    ``data``: given from Python."""
    counts = data_kind(config, vae) == "counts"
    return open_run_data(config, device, data, counts=counts)


def _data_facts(config: TrainConfig, data: ImageData) -> dict[str, float]:
    """What a model builder needs to know of the data beyond its shape."""
    facts: dict[str, float] = {"context_dim": data.context_dim}
    if config.labels:
        labelled = int(labelled_rows(data.train_x, data.context_dim).sum())
        facts["labelled_share"] = data.train_x.shape[0] / labelled
    return facts


def model_of(config: TrainConfig, data: ImageData, vae: VAE | None) -> VAE:
    """The run's VAE: built from the config's names, or the one given from Python
    (``model="given"``), checked to read rows of the data's width."""
    if config.model != GIVEN_MODEL:
        if vae is not None:
            raise ConfigError(
                f"a VAE was given and --model {config.model} names another: give one of them"
            )
        return build_model(data.shape, **_data_facts(config, data), **config.model_options())
    if vae is None:
        raise ConfigError(
            "this run's VAE was given from Python: pass it again (pyro_vae.train(vae=...), "
            "pyro_vae.load_run(run_dir, vae=...))"
        )
    try:
        vae = as_vae(vae)
    except TypeError as err:
        raise ConfigError(str(err)) from None
    width = int(data.train_x.shape[1])
    if vae.row_width not in (None, width):
        raise ConfigError(
            f"the given VAE reads rows of {vae.row_width} values; the data's rows have {width}"
        )
    if isinstance(vae, PyroProgram):
        if config.compile:
            raise ConfigError(
                "--compile substitutes a module's parameters, which a bare model/guide pair "
                "takes from Pyro's store: train it eagerly, or wrap it in a VAE"
            )
        vae.capture(data.test_x[:2])
    return vae


def compiles(config: TrainConfig, vae: VAE, steps: int) -> bool:
    """Whether the run's step is compiled: with ``--compile``, or by itself when the run takes
    at least ``compile_from`` steps and ``--compile`` would be accepted for it.

    The threshold is the compilation repaid: on a 2-core EPYC the compiled step of the
    MLP 784-400-50 (batch 128) saved 3.5-4 ms a step against the eager one, and compiling it
    took 30 s with Inductor's cache empty (6-9 s with it filled), so from about 8,600 steps
    (docs/speed.md, "The default path"). The default run (100 epochs of 36 steps) stays eager.
    A step that cannot be recorded as one graph then runs eagerly (see the trainer)."""
    if config.compile:
        return True
    if not config.compile_from or steps < config.compile_from or isinstance(vae, PyroProgram):
        return False
    try:
        replace(config, compile=True)
    except ConfigError:  # a model, estimator or precision that runs the eager step
        return False
    return True


def check_fits(vae: VAE, binarizer: Binarizer, run_data: RunData | None = None) -> None:
    """The data lies in the support of the VAE's likelihood, and a model or guide of the
    user's has the structure the objectives need (one line, before any step)."""
    likelihood = getattr(vae, "likelihood", None)
    if run_data is not None and run_data.streamed:
        check_streamed(run_data, likelihood, binarizer.mode)
    elif hasattr(likelihood, "check_data"):
        likelihood.check_data(binarizer.test_x)
        likelihood.check_data(binarizer.train_x())
    if vae.runs_user_code():
        check_program(vae.model, vae.guide, binarizer.test_x[:2])


def assemble(
    config: TrainConfig, data: ImageData | None = None, vae: VAE | None = None
) -> Assembly:
    """Every part of the run ``config`` describes (``data``: the dataset, if already loaded;
    ``vae``: the model, when it was given from Python).

    The order fixes the random streams: the seed is set before the model is built, so a run
    is the same every time for the same options."""
    device = resolve_device(config.device)
    cluster = join(device)
    pyro.set_rng_seed(config.seed)
    pyro.enable_validation(False)  # inputs are checked up front; keep the step lean
    run_data = load_data(config, device, data, vae)
    data = run_data.data
    binarizer, feed = _feed(config, run_data, cluster, device)
    vae = model_of(config, data, vae).to(device)
    check_fits(vae, binarizer, run_data)

    n_train = data.train_x.shape[0]
    global_batch = config.batch_size * cluster.world_size
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    if cluster.distributed:  # every process needs a slice of every global batch
        steps_per_epoch = n_train // global_batch
        if steps_per_epoch == 0:
            raise ConfigError(
                f"{n_train} training images cannot fill one global batch "
                f"of {global_batch}: lower --batch-size"
            )
    _set_precision(config, device)
    estimator = ESTIMATORS.create(config.estimator, **config.estimator_options())
    step_estimator = sync_free(estimator)
    if config.cuda_graphs and device.type != "cuda":
        raise ConfigError(f"--cuda-graphs needs a CUDA device; this run is on {device}")
    compiled = (
        CompiledStep(vae, step_estimator, cuda_graphs=bool(config.cuda_graphs))
        if compiles(config, vae, steps_per_epoch * config.epochs)
        else None
    )
    return Assembly(
        config=config,
        device=device,
        cluster=cluster,
        data=data,
        run_data=run_data,
        binarizer=binarizer,
        feed=feed,
        vae=vae,
        estimator=estimator,
        step_estimator=step_estimator,
        compiled=compiled,
        optimizer=make_optimizer(vae.parameters(), config.lr),
        schedules=_schedules(config, vae, step_estimator, steps_per_epoch),
        steps_per_epoch=steps_per_epoch,
        global_batch=global_batch,
    )


DEFAULT_WORKERS = 2  # streamed rows that are decoded as they are read: read ahead by two


def _feed(
    config: TrainConfig, run_data: RunData, cluster: Cluster, device: torch.device
) -> tuple[Binarizer | StreamBinarizer, ResidentFeed | StreamFeed]:
    """Where the loop's batches come from: the data's tensors, or a stream of them."""
    if run_data.streamed:
        workers = config.workers
        if workers is None:  # 2 where reading decodes, none for a memory map (measured)
            workers = DEFAULT_WORKERS if run_data.source.train.decodes else 0
        feed = StreamFeed(run_data, config.binarize, config.seed, workers, cluster, device)
        return StreamBinarizer(config.binarize, run_data, feed), feed
    binarizer = Binarizer(config.binarize, run_data.data, seed=config.seed)
    return binarizer, ResidentFeed(binarizer, cluster)


def _set_precision(config: TrainConfig, device: torch.device) -> None:
    if config.precision == "tf32":
        if device.type != "cuda":
            raise ConfigError("--precision tf32 applies to CUDA devices")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _schedules(
    config: TrainConfig, vae: VAE, estimator: ELBO, steps_per_epoch: int
) -> list[Schedule]:
    """KL warm-up sets beta; capacity annealing sets the capacity objective's C; the
    relaxed class site's temperature falls from ``--temperature`` to its floor."""

    def steps(epochs: float | None) -> int:
        return round((epochs or 0.0) * steps_per_epoch)

    def set_beta(value: float) -> None:
        vae.beta = value

    schedules = [Schedule(KLWarmup(config.beta, steps(config.kl_warmup_epochs)), set_beta)]
    if config.capacity_epochs is not None:

        def set_capacity(value: float) -> None:
            estimator.capacity = value

        ramp = LinearRamp(config.capacity, steps(config.capacity_epochs))
        schedules.append(Schedule(ramp, set_capacity))
    if config.temperature_epochs is not None:

        def set_temperature(value: float) -> None:
            vae.discrete.temperature = value

        ramp = GeometricRamp(
            config.temperature, config.temperature_floor, steps(config.temperature_epochs)
        )
        schedules.append(Schedule(ramp, set_temperature))
    return schedules
