"""What a run says before its first step: where it runs, on what, with what, and the result of
the first-batch reference check (so that a long run is seen to be the run that was meant)."""

from __future__ import annotations

from typing import Any

import torch

from ..version import __version__

# The trainer that starts (pyro_vae.training.loop.Trainer); this module does not import the loop.
StartingTrainer = Any


def _count(n: int) -> str:
    return f"{n:,}"


def _where(trainer: StartingTrainer) -> str:
    device, cluster = trainer.parts.device, trainer.cluster
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    processes = f", {cluster.world_size} processes" if cluster.distributed else ""
    return (
        f"device {device}{threads}{processes}; pyro-vae {__version__}, torch "
        f"{torch.__version__.split('+')[0]}"
    )


def _workers(n: int) -> str:
    return "read in this process" if n == 0 else f"read ahead by {n} worker{'s' * (n > 1)}"


def _data(trainer: StartingTrainer) -> str:
    c, data = trainer.config, trainer.parts.data
    shape = "x".join(map(str, data.shape))
    record = trainer.parts.run_data.record
    where = f"{record['format']} {record['path']}" if record.get("path") else c.dataset
    where = "given from Python" if where == "given" else where
    how = ""
    if record.get("read"):
        how = (
            f", streamed ({_workers(trainer.parts.feed.workers)})"
            if trainer.parts.run_data.streamed
            else ", held on the device"
        )
    return (
        f"data {where}: {_count(data.train_x.shape[0])} train / "
        f"{_count(data.test_x.shape[0])} test images of {shape}, binarize {c.binarize}{how}"
    )


def _model(trainer: StartingTrainer) -> str:
    c = trainer.config
    params = sum(p.numel() for p in trainer.vae.parameters())
    if c.likelihood is None:  # the user's own: the class, and its part options if any
        built = type(trainer.vae).__name__
        given = ", ".join(f"{k} {v}" for k, v in c.part_options.items())
        return (
            f"model {c.model} ({built}{'; ' + given if given else ''}); {_count(params)} parameters"
        )
    parts = [f"{k} {getattr(c, k)}" for k in ("network", "likelihood", "prior", "guide")]
    parts = [p for p in parts if not p.endswith(" None")]
    layers = f"z {c.z_dim}" + (f", z2 {c.z2_dim}" if c.z2_dim is not None else "")
    context = f", context {c.context}" if c.context not in (None, "none") else ""
    kind = "autoencoder" if c.autoencoder else f"model {c.model}"
    return f"{kind}: {', '.join(parts)}, {layers}{context}; {_count(params)} parameters"


def _objective(trainer: StartingTrainer) -> str:
    c, steps = trainer.config, trainer.parts.steps_per_epoch
    options = ", ".join(f"{k} {v}" for k, v in c.estimator_options().items())
    estimator = f"estimator {c.estimator} ({type(trainer.parts.estimator).__name__}"
    estimator += f"; {options})" if options else ")"
    if c.autoencoder:
        beta = "no KL term"
    elif c.kl_warmup_epochs:
        beta = f"beta 0 -> {c.beta:g} over {c.kl_warmup_epochs:g} epochs, then constant"
    else:
        beta = f"beta {c.beta:g}, constant"
    capacity = ""
    if c.capacity_epochs:
        capacity = f"; capacity 0 -> {c.capacity:g} nats over {c.capacity_epochs:g} epochs"
    return f"{estimator}; {beta}{capacity}; {steps} steps of {trainer.parts.global_batch} / epoch"


def _run(trainer: StartingTrainer) -> str:
    c, pos = trainer.config, trainer.pos
    state = f"resumed after epoch {pos.epoch}, step {pos.step}" if pos.step else "new run"
    compiled = ""
    if trainer.parts.compiled is not None:
        auto = "" if c.compile else f" (a run of {c.compile_from:,}+ steps)"
        compiled = f", compiled step{auto}"
    return (
        f"run {c.out} ({state}): {c.epochs} epochs, Adam lr {c.lr:g}, seed {c.seed}, "
        f"precision {c.precision}{compiled}"
    )


def reference_line(check: dict[str, Any] | None) -> str:
    """The first-batch reference check, in one line (or why there is none)."""
    if not check:
        return "reference check: skipped (--skip-reference-check)"
    if check.get("check") == "pyro":
        return (
            f"reference check: {check['compared']} {check['step_loss']:.4f} = "
            f"{check['against']} {check['pyro_loss']:.4f} on the first batch of "
            f"{check['batch_size']} images (no hand-written loss: {check['no_hand_written']})"
        )
    return (
        f"reference check: Pyro loss {check['pyro_loss']:.4f} = hand-written "
        f"{check['reference_loss']:.4f} on the first batch of {check['batch_size']} images"
    )


def banner(trainer: StartingTrainer) -> list[str]:
    """The lines a run prints as it starts."""
    return [
        _run(trainer),
        "  " + _where(trainer),
        "  " + _data(trainer),
        "  " + _model(trainer),
        "  " + _objective(trainer),
        reference_line(trainer.reference_check),
    ]
