"""Data-parallel SVI over several processes, GPUs or machines, launched with ``torchrun``.

    torchrun --nproc_per_node=4 -m pyro_vae train --dataset fashion-mnist ...
    # two machines, four GPUs each (run on both, node_rank 0 and 1):
    torchrun --nnodes=2 --nproc_per_node=4 --node_rank=0 --master_addr=HOST0 \\
        --master_port=29500 -m pyro_vae train ...

Every process holds the whole dataset (it is small) and the same model, initialised from the
same seed. A global batch of ``batch_size * world_size`` images is drawn in the same order
everywhere and each process takes its slice; each process's loss is a sum over its images,
so summing the gradients over processes (``all_reduce``) gives the gradient of the combined
batch, and every process takes the same optimizer step. Each process draws its own posterior
noise (seed + rank). Only rank 0 evaluates and writes the run directory; its checkpoints
hold every process's random state, so a resumed run with the same number of processes
continues bit for bit. A stop signal (Ctrl-C, SIGTERM) seen by any process is agreed on at
the next loss check, so all of them save and stop at the same step. The backend is NCCL
on CUDA (one GPU per process, ``cuda:LOCAL_RANK``) and Gloo on CPU.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Cluster:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This process's contiguous slice of a global batch."""
        return x.tensor_split(self.world_size)[self.rank] if self.distributed else x

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over processes, in place; returns it."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather(self, obj: Any) -> list[Any] | None:
        """Every process's ``obj``, in rank order, on rank 0 (``None`` elsewhere)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Replace each gradient by its sum over processes (one flat all_reduce)."""
        if not self.distributed:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(g)
            offset += n

    def close(self, *, together: bool = True) -> None:
        """Leave the process group. ``together`` (a run that ended normally): wait for every
        process first, so that none tears its connections down while another still reads
        them (gloo aborts the reading process then). After an error another process may
        never arrive, so each leaves at once."""
        if self.distributed and dist.is_initialized():
            if together:
                dist.barrier()
            dist.destroy_process_group()


def leave_worker_process(code: int = 0) -> NoReturn:
    """End a worker of a distributed run (rank > 0) whose run ended, without Python's shutdown.
    In shutdown the interpreter can destroy gloo's objects while gloo's threads still hold
    tensors, and the worker then aborts ("terminate called without an active exception";
    PyTorch's c10d names the race: pytorch/pytorch#179291). torchrun reports that as a failed
    run, and ends rank 0 while it writes the run's figures. A worker writes no files, and its
    output is flushed first, so nothing is lost by skipping the shutdown."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 for a single process), known before
    :func:`join`: only rank 0 writes the run directory."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def join(device: torch.device) -> Cluster:
    """The process group torchrun described in the environment (WORLD_SIZE, RANK, ...), or a
    single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Cluster()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return Cluster(dist.get_rank(), dist.get_world_size())
