"""Several processes training one model with PyTorch's DistributedDataParallel, started by ``torchrun``.

    torchrun --standalone --nproc_per_node=2 -m nanogpt_lib.train <the single-process flags>

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK in each process's environment; without them (a plain ``python -m``)
everything here is a no-op and the run is the single-process one. Processes talk through NCCL on CUDA and gloo on the
CPU. Each process draws its own share of every batch (``data.Batches``), DDP averages the gradients once per optimizer
step, and the step loss, the decision to stop and the full-corpus loss are reduced over all processes, so every
process takes the same decisions at the same step. Only rank 0 writes the run directory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import UserError


@dataclass(frozen=True)
class Group:
    """This process's place in the group: rank (0 writes the files), number of processes, GPU index on this node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over all processes (the tensor itself in a single process)."""
        if self.enabled:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    @contextlib.contextmanager
    def closed_on_error(self) -> Iterator[None]:
        """Close the group when the block fails: a set-up that fails leaves no process group behind."""
        try:
            yield
        except BaseException:
            self.close()
            raise


def join(device_type: str) -> Group:
    """Join the process group that torchrun set up in the environment (a group of one without torchrun)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Group()
    group = Group(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        if group.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"process {group.rank} wants GPU {group.local_rank}, but this machine has "
                f"{torch.cuda.device_count()}: set --nproc_per_node to at most the number of GPUs"
            )
        torch.cuda.set_device(group.local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=dt.timedelta(minutes=10))
    return group
