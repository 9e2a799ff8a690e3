"""The SVI loop: data on the device, Pyro's ELBO as the loss, a run directory as the record.

Each step is stochastic variational inference: Pyro's estimator returns a differentiable
estimate of -ELBO_beta for the batch (``elbo.differentiable_loss(model, guide, x)``) and
``torch.optim.Adam`` steps every parameter of the VAE. The module owns its parameters, so the
optimizer does not depend on Pyro's global parameter store (a second VAE in the same process,
or a resumed one, trains its own tensors). ``pyro.infer.SVI`` drives ``vae.model`` /
``vae.guide`` just as well; the test suite checks that too.

A run can stop at any moment and lose nothing:

- checkpoints (model, optimizer, every random-number state, epoch and batch position, the
  metrics so far) are written atomically at each epoch end, every ``checkpoint_every`` steps,
  and when SIGINT or SIGTERM arrives, after which the run exits cleanly;
- ``resume=True`` continues from the last checkpoint and ends with the same parameters and
  metrics, bit for bit on CPU, as a run that was never stopped;
- a non-finite loss stops the run at that step, naming the step, the parameters that went
  non-finite and the likely cause, without overwriting the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from . import runs
from .compiled import CompiledStep
from .conditional import with_context
from .config import ConfigError, TrainConfig
from .data import Binarizer, ImageData, load_dataset
from .distributed import join, local_device
from .evaluation import evaluate_elbo
from .model import VAE
from .models import build_model
from .objectives import KLWarmup, make_estimator
from .reference import check_against_reference
from .report import make_figures
from .sync_free import sync_free

__all__ = ["TrainConfig", "TrainResult", "Trainer", "train", "TrainingInterrupted", "NonFiniteLoss"]

# Training -ELBO is measured on at most this many training images per epoch (a fixed subset).
TRAIN_EVAL_IMAGES = 10_000
# How often the loss is checked for NaN/inf: every step on CPU (a free check there); on a GPU
# each check is a host sync, so every this many steps (and always before a checkpoint).
GPU_FINITE_CHECK_EVERY = 50

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
TIMING_FIELDS = ("train_seconds", "eval_seconds")


class RunDirectoryError(ValueError):
    """The run directory cannot be used as asked (exists, empty, corrupt, other config)."""


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped the run after a checkpoint was saved."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


def make_optimizer(params, lr: float) -> torch.optim.Optimizer:
    """Adam with the fused implementation (one kernel for all parameters), where available."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # an older torch, or a device without the fused kernel
        return torch.optim.Adam(params, lr=lr, foreach=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class TrainResult:
    vae: VAE
    summary: dict[str, Any]
    metrics: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Position:
    """Where a run is: ``batch`` batches of epoch ``epoch + 1`` done, ``step`` steps in all."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    epoch_loss: float = 0.0  # sum of the batch losses so far in this epoch
    epoch_seconds: float = 0.0
    # generator states at the start of epoch ``epoch + 1``: replaying them redraws that epoch's
    # binarized images and batch order exactly
    epoch_rng: dict[str, torch.Tensor] = field(default_factory=dict)


@contextlib.contextmanager
def _stop_requests() -> Iterator[list[int]]:
    """Turn SIGINT/SIGTERM into a request the loop honours between steps.

    Yields a list that receives the signal number; outside the main thread (where handlers
    cannot be installed) it stays empty and signals act as usual.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: object) -> None:
        if received:  # a second Ctrl-C while saving: leave at once
            raise KeyboardInterrupt
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _prepare_directory(
    out: Path, resume: bool, overwrite: bool, write: bool = True
) -> dict[str, Any] | None:
    """Check the run directory; with ``resume``, return the checkpoint to continue from.
    Only a process with ``write`` (rank 0) removes anything."""
    checkpoint = out / runs.CHECKPOINT
    if out.is_dir() and write:  # temp files of writes that a kill interrupted
        for stale in out.glob(".*.tmp"):
            stale.unlink()
    if resume:
        if not checkpoint.exists():
            raise RunDirectoryError(f"nothing to resume: {str(checkpoint)!r} does not exist")
        try:
            state = runs.load_checkpoint(checkpoint)
            needed = {"model", "optimizer", "position", "config", "rng", "metrics"}
            missing = needed - set(state)
        except Exception as err:  # torch.load raises many types on a damaged file
            raise RunDirectoryError(f"checkpoint {str(checkpoint)!r} is corrupt ({err})") from None
        if missing:
            raise RunDirectoryError(
                f"checkpoint {str(checkpoint)!r} is incomplete (no {', '.join(sorted(missing))})"
            )
        return state
    if overwrite:
        for name in (runs.CHECKPOINT, runs.METRICS, runs.SUMMARY, runs.CONFIG):
            if write:
                (out / name).unlink(missing_ok=True)
    elif any((out / name).exists() for name in (runs.CHECKPOINT, runs.METRICS)):
        raise RunDirectoryError(
            f"{str(out)!r} already holds a run: continue it with --resume, "
            "replace it with --overwrite, or choose another --out"
        )
    return None


def _check_resumable(config: TrainConfig, state: dict[str, Any]) -> None:
    try:
        saved = TrainConfig.from_dict(state["config"])
    except (ValueError, TypeError) as err:
        raise RunDirectoryError(f"the checkpoint's config is unreadable ({err})") from None
    differences = config.differences(saved)
    if differences:
        raise RunDirectoryError(
            "the checkpoint was made with another config ("
            + "; ".join(differences)
            + "): resume with the run's own options, or start a new run"
        )
    done = state["position"]["epoch"]
    if done > config.epochs:
        raise ConfigError(f"--epochs {config.epochs} is less than the {done} epochs done")


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _non_finite_message(vae: VAE, config: TrainConfig, pos: Position, loss: float) -> str:
    bad = [
        name
        for name, p in vae.named_parameters()
        if not torch.isfinite(p).all() or (p.grad is not None and not torch.isfinite(p.grad).all())
    ]
    if config.likelihood == "gaussian-learned":
        cause = "the learned sigma collapsing; raise --sigma-floor or lower --lr"
    elif config.lr > 1e-2:
        cause = f"a learning rate too high for Adam (--lr {config.lr}); try 1e-3"
    else:
        cause = "an exploding gradient; lower --lr"
    where = f"parameters now non-finite: {', '.join(bad[:4])}" if bad else "parameters finite"
    return (
        f"the loss became {loss} at step {pos.step} (epoch {pos.epoch + 1}, batch {pos.batch}); "
        f"{where}; likely cause: {cause}; "
        f"the last good checkpoint in {config.out!r} is kept"
    )


class Trainer:
    """One run: builds the model, optimizer and data streams, then trains epoch by epoch.

    Everything a checkpoint must restore for an exact resume is in :meth:`checkpoint_state`.
    """

    def __init__(
        self,
        config: TrainConfig,
        data: ImageData | None = None,
        *,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.config = config
        self.device = device = local_device(resolve_device(config.device))
        self.cluster = join(device)
        self.out = Path(config.out)
        saved = _prepare_directory(self.out, resume, overwrite, write=self.cluster.is_main)
        if saved is not None:
            _check_resumable(config, saved)

        pyro.set_rng_seed(config.seed)
        pyro.enable_validation(False)  # inputs are checked up front; keep the step lean
        if data is None:
            data = load_dataset(config.dataset, config.data_dir)
        self.data = data = with_context(data, config.context).to(device)
        self.binarizer = Binarizer(config.binarize, data, seed=config.seed)
        self.vae = build_model(
            data.shape, context_dim=data.context_dim, **config.model_options()
        ).to(device)
        self.vae.likelihood.check_data(self.binarizer.test_x)
        self.vae.likelihood.check_data(self.binarizer.train_x())

        self.n_train = data.train_x.shape[0]
        self.global_batch = config.batch_size * self.cluster.world_size
        if self.cluster.distributed:  # every process needs a slice of every global batch
            self.steps_per_epoch = self.n_train // self.global_batch
            if self.steps_per_epoch == 0:
                raise ConfigError(
                    f"{self.n_train} training images cannot fill one global batch "
                    f"of {self.global_batch}: lower --batch-size"
                )
        else:
            self.steps_per_epoch = math.ceil(self.n_train / config.batch_size)
        self.schedule = KLWarmup(config.beta, round(config.kl_warmup_epochs * self.steps_per_epoch))
        if config.precision == "tf32":
            if device.type != "cuda":
                raise ConfigError("--precision tf32 applies to CUDA devices")
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.vae.register_params = False  # the optimizer holds the parameters (see model.py)
        self.elbo = sync_free(self._estimator())
        if config.cuda_graphs and device.type != "cuda":
            raise ConfigError(f"--cuda-graphs needs a CUDA device; this run is on {device}")
        self.compiled = (
            CompiledStep(self.vae, self.elbo, cuda_graphs=config.cuda_graphs)
            if config.compile
            else None
        )
        self.params = list(self.vae.parameters())
        self.optimizer = make_optimizer(self.params, config.lr)
        self.perm_generator = torch.Generator(device=device).manual_seed(config.seed)
        eval_generator = torch.Generator().manual_seed(config.seed)
        self.train_eval_idx = torch.randperm(self.n_train, generator=eval_generator)[
            :TRAIN_EVAL_IMAGES
        ].to(device)
        self.check_every = 1 if device.type == "cpu" else GPU_FINITE_CHECK_EVERY

        self.reference_check = self._check_reference() if config.check_reference else None
        if saved is None:
            # the check above must not shift the random streams; each process draws its own
            pyro.set_rng_seed(config.seed + self.cluster.rank)
            self.binarizer.restart()
            self.pos = Position(epoch_rng=self._epoch_rng())
            self.metrics: list[dict[str, float]] = []
        else:
            self._restore(saved)
        if self.cluster.is_main:  # only rank 0 writes the run directory
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / runs.FIGURES).mkdir(exist_ok=True)
            runs.write_json(self.out / runs.CONFIG, config.as_dict())
            # a resumed run drops any rows written after its checkpoint
            runs.write_metrics(self.out / runs.METRICS, METRIC_FIELDS, self.metrics)

    def _estimator(self):
        c = self.config
        return make_estimator(
            c.estimator, c.particles, c.grad, **c.estimator_options(self.steps_per_epoch)
        )

    def _check_reference(self) -> dict[str, Any]:
        """Pyro's loss = the hand-written loss on the first batch, or stop (ReferenceMismatch)."""
        self.vae.beta = self.schedule(0)
        x0 = self.binarizer.train_x()[: self.config.batch_size]
        p, r = check_against_reference(self.vae, self.elbo, x0, step=self.compiled)
        return {"pyro_loss": p, "reference_loss": r, "batch_size": int(x0.shape[0])}

    def _epoch_rng(self) -> dict[str, torch.Tensor]:
        """Generator states at an epoch's start: replaying them redraws its data and order."""
        return {"binarize": self.binarizer.state(), "batches": self.perm_generator.get_state()}

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "model": self.vae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "position": dataclasses.asdict(self.pos),
            "metrics": self.metrics,
            "rng": _rng_state(self.device),
            "config": self.config.as_dict(),
            "reference_check": self.reference_check,
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        try:
            self.vae.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise RunDirectoryError(f"the checkpoint does not fit this model ({err})") from None
        self.pos = Position(**saved["position"])
        self.metrics = saved["metrics"]
        self.reference_check = saved.get("reference_check") or self.reference_check
        cluster, ranks = self.cluster, saved.get("rank_rng")
        if not cluster.distributed:
            _set_rng_state(saved["rng"], self.device)
        elif ranks is not None and len(ranks) == cluster.world_size:
            _set_rng_state(ranks[cluster.rank], self.device)  # each process its own stream
        else:  # another number of processes: fresh streams, still one per process
            step = self.pos.step + 1
            pyro.set_rng_seed(self.config.seed + cluster.rank + cluster.world_size * step)

    def save(self) -> None:
        """Checkpoint (rank 0 writes; every process must call it: it gathers their random
        states, so that a resumed multi-process run continues bit for bit)."""
        rank_rng = self.cluster.gather(_rng_state(self.device))
        if self.cluster.is_main:
            state = self.checkpoint_state()
            if self.cluster.distributed:
                state["rank_rng"] = rank_rng
            runs.save_checkpoint(self.out / runs.CHECKPOINT, state)

    def _check(self, loss_sum: torch.Tensor, stop: list[int]) -> int:
        """Stop on a non-finite loss (NonFiniteLoss); return the signal to stop for (0: none).

        Both are summed over processes in one collective, so that all of them stop together
        even when a signal reached only some of them.
        """
        local = stop[0] if stop else 0
        packed = torch.stack([loss_sum.detach().float(), loss_sum.new_tensor(float(local))])
        value, signals = self.cluster.sum_(packed).tolist()
        if not math.isfinite(value):
            raise NonFiniteLoss(_non_finite_message(self.vae, self.config, self.pos, value))
        if not signals:
            return 0
        return local or (
            int(signals) if int(signals) in (signal.SIGINT, signal.SIGTERM) else signal.SIGTERM
        )

    def _interrupted(self, signum: int) -> TrainingInterrupted:
        where = (
            f"at epoch {self.pos.epoch + 1}, batch {self.pos.batch}"
            if self.pos.batch
            else f"after epoch {self.pos.epoch}"
        )
        return TrainingInterrupted(
            signum,
            f"stopped by {signal.Signals(signum).name} {where} (step {self.pos.step}); "
            f"checkpoint saved; continue with: pyro-vae train --resume --out {self.out}",
        )

    def _train_epoch(self, stop: list[int]) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Steps from the current position to the epoch's end; returns the epoch's images,
        the summed loss and the training seconds."""
        config, pos, device = self.config, self.pos, self.device
        self.binarizer.set_state(pos.epoch_rng["binarize"])
        self.perm_generator.set_state(pos.epoch_rng["batches"])
        self.vae.train()
        x_epoch = self.binarizer.train_x()
        perm = torch.randperm(self.n_train, generator=self.perm_generator, device=device)
        total = torch.tensor(pos.epoch_loss, device=device)
        _sync(device)
        t0 = time.perf_counter() - pos.epoch_seconds
        while pos.batch < self.steps_per_epoch:
            self.vae.beta = self.schedule(pos.step)
            if hasattr(self.elbo, "update"):  # objectives with a schedule of their own
                self.elbo.update(pos.step)
            start = pos.batch * self.global_batch
            x = self.cluster.shard(x_epoch[perm[start : start + self.global_batch]])
            if self.compiled is not None:
                loss, _ = self.compiled(x, self.vae.beta)  # leaves the gradients in .grad
            else:
                with self._autocast():
                    loss = self.elbo.differentiable_loss(self.vae.model, self.vae.guide, x)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            self.cluster.sum_gradients(self.params)
            self.optimizer.step()
            total += loss.detach()
            pos.batch += 1
            pos.step += 1
            due = config.checkpoint_every and pos.step % config.checkpoint_every == 0
            # one process honours a stop request at once; several agree on it at a check
            signum = 0
            if due or pos.step % self.check_every == 0 or (stop and not self.cluster.distributed):
                signum = self._check(total, stop)
            if signum or due:
                pos.epoch_loss = total.item()
                _sync(device)
                pos.epoch_seconds = time.perf_counter() - t0
                self.save()
            if signum:
                raise self._interrupted(signum)
        self._check(total, [])  # a stop request now is agreed on after the epoch is saved
        _sync(device)
        return x_epoch, total, time.perf_counter() - t0

    def _autocast(self) -> torch.autocast:
        """bfloat16 autocast for ``--precision bf16`` (a no-op otherwise)."""
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"
        )

    def run_epoch(self) -> float:
        """One training epoch with no evaluation and no files (for benchmarks); its seconds."""
        _, _, seconds = self._train_epoch([])
        self.pos = Position(
            epoch=self.pos.epoch + 1, step=self.pos.step, epoch_rng=self._epoch_rng()
        )
        return seconds

    def _evaluate(self, x_epoch: torch.Tensor) -> dict[str, float]:
        self.vae.eval()
        model, guide, batch = self.vae.model, self.vae.guide, self.config.eval_batch_size
        test = evaluate_elbo(model, guide, self.binarizer.test_x, batch)
        train_bound = evaluate_elbo(model, guide, x_epoch[self.train_eval_idx], batch)
        return {**train_bound.as_dict("train_"), **test.as_dict("test_")}

    def fit(self) -> TrainResult:
        config, main = self.config, self.cluster.is_main
        log = runs.MetricsLog(self.out / runs.METRICS, METRIC_FIELDS) if main else None
        bar = tqdm(
            total=config.epochs,
            initial=self.pos.epoch,
            desc="train",
            unit="epoch",
            disable=not (config.progress and main),
        )
        images_per_epoch = min(self.n_train, self.steps_per_epoch * self.global_batch)
        try:
            with _stop_requests() as stop, warnings.catch_warnings():
                # a NaN loss is caught with a better message than Pyro's warning
                warnings.filterwarnings("ignore", message="Encountered NaN")
                while self.pos.epoch < config.epochs:
                    x_epoch, total, train_seconds = self._train_epoch(stop)
                    train_loss = self.cluster.sum_(total.clone()).item() / images_per_epoch
                    if main:  # rank 0 evaluates and keeps the record
                        t1 = time.perf_counter()
                        row = {
                            "epoch": self.pos.epoch + 1,
                            "beta": self.vae.beta,
                            "train_loss": train_loss,
                            **self._evaluate(x_epoch),
                            "train_seconds": train_seconds,
                            "eval_seconds": time.perf_counter() - t1,
                        }
                        self.metrics.append(row)
                        log.append(row)
                        bar.update(1)
                        bar.set_postfix(
                            train=f"{train_loss:.2f}", test=f"{row['test_neg_elbo']:.2f}"
                        )
                    self.pos = Position(
                        epoch=self.pos.epoch + 1, step=self.pos.step, epoch_rng=self._epoch_rng()
                    )
                    self.save()
                    signum = self._check(torch.zeros((), device=self.device), stop)
                    if signum:  # a signal during the epoch's last step or its evaluation
                        raise self._interrupted(signum)
        finally:
            if log is not None:
                log.close()
            bar.close()
            self.cluster.close()

        summary = {}
        if main:
            summary = _summary(config, self.device, self.data, self.metrics, self.reference_check)
            summary["processes"] = self.cluster.world_size
            runs.write_json(self.out / runs.SUMMARY, summary)
            make_figures(
                self.vae,
                self.binarizer.test_x,
                self.data.test_y,
                self.data.shape,
                self.metrics,
                self.out / runs.FIGURES,
                title=f"{config.dataset}: {config.likelihood} / {config.prior} / "
                f"{config.estimator}, beta={config.beta}, z={config.z_dim}",
            )
        self.vae.register_params = True  # the model goes back to users, who may use SVI
        return TrainResult(self.vae, summary, self.metrics)


def train(
    config: TrainConfig,
    data: ImageData | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> TrainResult:
    """Train a VAE as ``config`` says and leave a complete run directory in ``config.out``.

    ``resume`` continues the run in ``config.out`` from its checkpoint; ``overwrite`` replaces
    a run already there (without either, an existing run is an error, so nothing is lost).
    """
    return Trainer(config, data, resume=resume, overwrite=overwrite).fit()


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
    seconds = sum(r["train_seconds"] for r in timed)
    return {
        "test_neg_elbo": last["test_neg_elbo"],
        "test_distortion": last["test_distortion"],
        "test_rate": last["test_rate"],
        "train_neg_elbo": last["train_neg_elbo"],
        "best_test_neg_elbo": min(r["test_neg_elbo"] for r in metrics),
        "seconds_per_epoch": seconds / len(timed),
        "images_per_second": data.train_x.shape[0] * len(timed) / seconds,
        "epochs": int(last["epoch"]),
        "num_train": int(data.train_x.shape[0]),
        "num_test": int(data.test_x.shape[0]),
        "device": str(device),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "threads": torch.get_num_threads(),
        "compiled": config.compile,
        "cuda_graphs": config.cuda_graphs,
        "reference_check": reference_check,
        "units": "nats per image",
    }
