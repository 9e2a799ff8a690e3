"""Why a run stops before its last epoch, and what it says when it does.

- SIGINT or SIGTERM: the handler only records the request; the loop honours it between steps,
  after saving a checkpoint, and raises :class:`TrainingInterrupted` (exit status 128 + signal).
- A non-finite loss: :class:`NonFiniteLoss`, naming the step, the parameters that went
  non-finite and the likely cause; the last good checkpoint is kept.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import torch
from torch import nn


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped the run after a checkpoint was saved."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


class Terminated(BaseException):
    """SIGTERM outside the training loop (figures, evaluation, a report): raised where the
    process is, so that files being written are abandoned whole (a BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (the training loop installs its
    own handler while it runs, and restores this one after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stop_requests() -> Iterator[list[int]]:
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


def non_finite_message(
    module: nn.Module,
    loss: float,
    where: str,
    likelihood: str,
    lr: float,
    out: str,
    saved_step: int | None,
) -> str:
    """What went non-finite, where, and the likely cause."""
    bad = [
        name
        for name, p in module.named_parameters()
        if not torch.isfinite(p).all() or (p.grad is not None and not torch.isfinite(p.grad).all())
    ]
    if likelihood == "gaussian-learned":
        cause = "the learned sigma collapsing; raise --sigma-floor or lower --lr"
    elif lr > 1e-2:
        cause = f"a learning rate too high for Adam (--lr {lr}); try 1e-3"
    else:
        cause = "an exploding gradient; lower --lr"
    params = f"parameters now non-finite: {', '.join(bad[:4])}" if bad else "parameters finite"
    kept = (
        "no checkpoint had been written yet"
        if saved_step is None
        else f"the last good checkpoint (step {saved_step}) in {out!r} is kept"
    )
    return f"the loss became {loss} at {where}; {params}; likely cause: {cause}; {kept}"
