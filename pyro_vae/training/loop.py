"""The SVI loop: steps, schedules, checks, checkpoints. It only trains.

Each step is stochastic variational inference: the estimator returns a differentiable estimate
of -ELBO_beta for the batch (``elbo.differentiable_loss(model, guide, x)``) and
``torch.optim.Adam`` steps every parameter of the VAE. The module owns its parameters, so the
optimizer does not depend on Pyro's global parameter store (a second VAE in the same process,
or a resumed one, trains its own tensors); ``pyro.infer.SVI`` drives ``vae.model`` /
``vae.guide`` just as well.

A run can stop at any moment and lose nothing: checkpoints (model, optimizer, every
random-number state, epoch and batch position, the metrics so far) are written at each epoch
end, every ``checkpoint_every`` steps, and when SIGINT or SIGTERM arrives; a resumed run ends
with the same parameters and metrics, bit for bit on CPU, as one that was never stopped.
Metrics files, progress and figures are observers (:mod:`pyro_vae.training.observers`).
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import signal
import time
import warnings
from collections.abc import Sequence
from typing import Any

import pyro
import torch

from .. import param_store
from ..checks import check_against_pyro, check_against_reference, missing_reference
from ..inference.graph_compiler import CaptureError
from .assemble import Assembly
from .denormals import flushed_denormals
from .devices import synchronize
from .metrics import EpochEvaluation, summarize
from .observers import Observer
from .position import Position, rng_state, set_rng_state
from .run_dir import RunDirectory, RunDirectoryError
from .stops import NonFiniteLoss, TrainingInterrupted, non_finite_message, stop_requests

# How often the loss is checked for NaN/inf: every step on CPU (a free check there); on a GPU
# each check is a host sync, so every this many steps (and always before a checkpoint).
GPU_FINITE_CHECK_EVERY = 50


class Trainer:
    """Trains the assembled ``parts`` epoch by epoch; ``run_dir`` (None: no files, as in a
    benchmark) keeps checkpoints and the summary; ``saved`` is a checkpoint to continue from.

    Everything a checkpoint must restore for an exact resume is in :meth:`checkpoint_state`.
    """

    def __init__(
        self,
        parts: Assembly,
        run_dir: RunDirectory | None = None,
        observers: Sequence[Observer] = (),
        saved: dict[str, Any] | None = None,
    ) -> None:
        self.parts = parts
        self.config, self.vae, self.cluster = parts.config, parts.vae, parts.cluster
        self.run_dir = run_dir
        self.observers = list(observers) if self.cluster.is_main else []
        self.params = list(self.vae.parameters())
        self.perm_generator = torch.Generator(device=parts.device).manual_seed(self.config.seed)
        n_train = parts.data.train_x.shape[0]
        self.images_per_epoch = min(n_train, parts.steps_per_epoch * parts.global_batch)
        self.evaluate = EpochEvaluation(
            parts.binarizer.test_x,
            n_train,
            self.config.seed,
            self.config.eval_batch_size,
            test_y=parts.data.test_y,
        )
        self.check_every = 1 if parts.device.type == "cpu" else GPU_FINITE_CHECK_EVERY
        self.reference_check = self._check_reference() if self.config.check_reference else None
        self.saved_step: int | None = None  # the step of the last checkpoint on disk
        # an observer's request to stop (on one process): raised once this epoch is saved
        self.stop_request: Exception | None = None
        if saved is None:
            # the check above must not shift the random streams; each process draws its own
            pyro.set_rng_seed((self.config.seed + self.cluster.rank) % 2**32)
            parts.binarizer.restart()
            self.pos = Position(epoch_rng=self._epoch_rng())
            self.metrics: list[dict[str, float]] = []
        else:
            self._restore(saved)

    # --- state ---------------------------------------------------------------------------------

    def _check_reference(self) -> dict[str, Any]:
        """Pyro's loss = the hand-written loss on the first batch, or stop (ReferenceMismatch).
        A model with no hand-written loss (the user's own code) has its step checked against
        Pyro's own objective of it instead (:func:`~pyro_vae.checks.check_against_pyro`)."""
        parts = self.parts
        for schedule in parts.schedules:
            schedule.update(0)
        x0 = parts.binarizer.train_x()[: self.config.batch_size]
        try:
            return self._check_first_batch(x0)
        except CaptureError as err:
            self._go_uncompiled(err)
            return self._check_first_batch(x0)

    def _check_first_batch(self, x0: torch.Tensor) -> dict[str, Any]:
        parts = self.parts
        why = missing_reference(self.vae, parts.step_estimator)
        with param_store.off():
            if why is not None:
                record = check_against_pyro(
                    self.vae,
                    parts.estimator,
                    parts.step_estimator,
                    x0,
                    step=parts.compiled,
                    seed=self.config.seed,
                )
                return {**record, "no_hand_written": why}
            p, r = check_against_reference(self.vae, parts.step_estimator, x0, step=parts.compiled)
        return {
            "check": "hand-written",
            "pyro_loss": p,
            "reference_loss": r,
            "batch_size": int(x0.shape[0]),
        }

    def _epoch_rng(self) -> dict[str, torch.Tensor]:
        """Generator states at an epoch's start: replaying them redraws its data and order."""
        return {
            "binarize": self.parts.binarizer.state(),
            "batches": self.perm_generator.get_state(),
        }

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "model": self.vae.state_dict(),
            "optimizer": self.parts.optimizer.state_dict(),
            "position": dataclasses.asdict(self.pos),
            "metrics": self.metrics,
            "rng": rng_state(self.parts.device),
            "config": self.config.as_dict(),
            "reference_check": self.reference_check,
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        try:
            self.vae.load_state_dict(saved["model"])
            self.parts.optimizer.load_state_dict(saved["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise RunDirectoryError(f"the checkpoint does not fit this model ({err})") from None
        self.pos = Position(**saved["position"])
        self.saved_step = self.pos.step
        self.metrics = saved["metrics"]
        self.reference_check = saved.get("reference_check") or self.reference_check
        cluster, ranks, device = self.cluster, saved.get("rank_rng"), self.parts.device
        if not cluster.distributed:
            set_rng_state(saved["rng"], device)
        elif ranks is not None and len(ranks) == cluster.world_size:
            set_rng_state(ranks[cluster.rank], device)  # each process its own stream
        else:  # another number of processes: fresh streams, still one per process
            step = self.pos.step + 1
            pyro.set_rng_seed((self.config.seed + cluster.rank + cluster.world_size * step) % 2**32)

    def save(self) -> None:
        """Checkpoint (rank 0 writes; every process must call it: it gathers their random
        states, so that a resumed multi-process run continues bit for bit)."""
        rank_rng = self.cluster.gather(rng_state(self.parts.device))
        if self.cluster.is_main and self.run_dir is not None:
            state = self.checkpoint_state()
            if self.cluster.distributed:
                state["rank_rng"] = rank_rng
            self.run_dir.save_checkpoint(state)
            self.saved_step = self.pos.step

    # --- the loop ------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to ``config.epochs`` and return the summary (empty on ranks other than 0)."""
        # the optimizer holds the parameters; observers need none
        with param_store.off(), flushed_denormals(self.config.denormals == "flush"):
            for observer in self.observers:
                observer.on_start(self)
            ended = False
            try:
                with stop_requests() as stop, warnings.catch_warnings():
                    # a NaN loss is caught with a better message than Pyro's warning
                    warnings.filterwarnings("ignore", message="Encountered NaN")
                    while self.pos.epoch < self.config.epochs:
                        self._epoch(stop)
                ended = True
            finally:
                for observer in self.observers:
                    observer.on_close(self)
                self.cluster.close(together=ended)
            if not self.cluster.is_main:
                return {}
            summary = self.summary()
            if self.run_dir is not None:
                self.run_dir.write_summary(summary)
            for observer in self.observers:
                observer.on_end(self, summary)
        return summary

    def _epoch(self, stop: list[int]) -> None:
        """One epoch: train, measure (rank 0), tell the observers, checkpoint."""
        x_epoch, total, train_seconds = self._train_epoch(stop)
        train_loss = self.cluster.sum_(total.clone()).item() / self.images_per_epoch
        if self.cluster.is_main:  # rank 0 measures and keeps the record
            t1 = time.perf_counter()
            row = {
                "epoch": self.pos.epoch + 1,
                "beta": self.vae.beta,
                "train_loss": train_loss,
                **self.evaluate(self.vae, x_epoch),
                "train_seconds": train_seconds,
                "eval_seconds": time.perf_counter() - t1,
            }
            self.metrics.append(row)
            for observer in self.observers:
                observer.on_epoch_end(self, row)
        self.pos = Position(
            epoch=self.pos.epoch + 1, step=self.pos.step, epoch_rng=self._epoch_rng()
        )
        self.save()
        signum = self._check(torch.zeros((), device=self.parts.device), stop)
        if signum:  # a signal during the epoch's last step or its evaluation
            raise self._interrupted(signum)
        if self.stop_request is not None:  # the run ends here, whole: metrics and checkpoint
            raise self.stop_request

    def run_epoch(self) -> float:
        """One training epoch with no evaluation and no files (for benchmarks); its seconds."""
        with param_store.off(), flushed_denormals(self.config.denormals == "flush"):
            _, _, seconds = self._train_epoch([])
        self.pos = Position(
            epoch=self.pos.epoch + 1, step=self.pos.step, epoch_rng=self._epoch_rng()
        )
        return seconds

    def _train_epoch(self, stop: list[int]) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Steps from the current position to the epoch's end; returns the epoch's images,
        the summed loss and the training seconds."""
        parts, pos, device = self.parts, self.pos, self.parts.device
        parts.binarizer.set_state(pos.epoch_rng["binarize"])
        self.perm_generator.set_state(pos.epoch_rng["batches"])
        self.vae.train()
        x_epoch = parts.feed.epoch_rows(pos.epoch)
        n_train = x_epoch.shape[0]
        perm = torch.randperm(n_train, generator=self.perm_generator, device=device)
        total = torch.tensor(pos.epoch_loss, device=device)
        synchronize(device)
        t0 = time.perf_counter() - pos.epoch_seconds
        steps, size = parts.steps_per_epoch, parts.global_batch
        for x in parts.feed.batches(x_epoch, perm, pos.batch, steps, size, pos.epoch):
            loss = self._step(x)
            total += loss.detach()
            pos.batch += 1
            pos.step += 1
            for observer in self.observers:
                observer.on_step_end(self, total)
            every = self.config.checkpoint_every
            due = every and pos.step % every == 0
            # one process honours a stop request at once; several agree on it at a check
            signum = 0
            if due or pos.step % self.check_every == 0 or (stop and not self.cluster.distributed):
                signum = self._check(total, stop)
            if signum or due:
                pos.epoch_loss = total.item()
                synchronize(device)
                pos.epoch_seconds = time.perf_counter() - t0
                self.save()
            if signum:
                raise self._interrupted(signum)
        self._check(total, [])  # a stop request now is agreed on after the epoch is saved
        synchronize(device)
        return x_epoch, total, time.perf_counter() - t0

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        """One SVI step on the batch ``x``; returns its loss (a tensor: no host sync here)."""
        parts = self.parts
        for schedule in parts.schedules:
            schedule.update(self.pos.step)
        loss = self._compiled_step(x) if parts.compiled is not None else None
        if loss is None:
            bf16 = self.config.precision == "bf16"
            with torch.autocast(parts.device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = parts.step_estimator.differentiable_loss(self.vae.model, self.vae.guide, x)
            parts.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.cluster.sum_gradients(self.params)
        parts.optimizer.step()
        return loss

    def _compiled_step(self, x: torch.Tensor) -> torch.Tensor | None:
        """The compiled step's loss (it leaves the gradients in .grad); None where a step
        compiled by itself (``compile_from``, not ``--compile``) cannot be recorded as one
        graph: the run then goes on eagerly, from this step's same noise (recording draws
        nothing from the random streams)."""
        try:
            loss, _ = self.parts.compiled(x, self.vae.beta)
        except CaptureError as err:
            self._go_uncompiled(err)
            return None
        return loss

    def _go_uncompiled(self, err: CaptureError) -> None:
        """Drop a step compiled by itself that cannot be recorded (with --compile the error
        stands): the run goes on eagerly, with a warning naming why."""
        if self.config.compile:
            raise err
        warnings.warn(f"the step runs uncompiled: {err}", stacklevel=3)
        self.parts.compiled = None

    # --- stopping ------------------------------------------------------------------------------

    def _check(self, loss_sum: torch.Tensor, stop: list[int]) -> int:
        """Stop on a non-finite loss (NonFiniteLoss); return the signal to stop for (0: none).

        Both are summed over processes in one collective, so that all of them stop together
        even when a signal reached only some of them.
        """
        local = stop[0] if stop else 0
        packed = torch.stack([loss_sum.detach().float(), loss_sum.new_tensor(float(local))])
        value, signals = self.cluster.sum_(packed).tolist()
        if not math.isfinite(value):
            c = self.config
            raise NonFiniteLoss(
                non_finite_message(
                    self.vae, value, self.pos.where(), c.likelihood, c.lr, c.out, self.saved_step
                )
            )
        if not signals:
            return 0
        return local or (
            int(signals) if int(signals) in (signal.SIGINT, signal.SIGTERM) else signal.SIGTERM
        )

    def _interrupted(self, signum: int) -> TrainingInterrupted:
        pos = self.pos
        where = (
            f"at epoch {pos.epoch + 1}, batch {pos.batch}"
            if pos.batch
            else f"after epoch {pos.epoch}"
        )
        return TrainingInterrupted(
            signum,
            f"stopped by {signal.Signals(signum).name} {where} (step {pos.step}); "
            "checkpoint saved; continue with: pyro-vae train --resume --out "
            + shlex.quote(self.config.out),
        )

    def summary(self) -> dict[str, Any]:
        """The run's final numbers (:func:`pyro_vae.training.metrics.summarize`) and how it
        ran."""
        data, config = self.parts.data, self.config
        return {
            **summarize(
                self.metrics,
                data.train_x.shape[0],
                data.test_x.shape[0],
                self.parts.device,
                getattr(self.vae, "likelihood", None),
            ),
            "compiled": self.parts.compiled is not None,
            "cuda_graphs": bool(config.cuda_graphs),
            "reference_check": self.reference_check,
            "processes": self.cluster.world_size,
            **self._data_summary(),
        }

    def _data_summary(self) -> dict[str, Any]:
        """How a run of the user's own data read it: held on the device, or streamed (with the
        share of the training time spent waiting for batches, this session)."""
        read = self.parts.run_data.record.get("read")
        if read is None:
            return {}
        feed, seconds = self.parts.feed, sum(r["train_seconds"] for r in self.metrics)
        data: dict[str, Any] = {"read": read}
        if feed.streamed:
            data["workers"] = feed.workers
            data["data_wait_share"] = feed.total_wait / max(seconds, 1e-9)
        return {"data": data}
