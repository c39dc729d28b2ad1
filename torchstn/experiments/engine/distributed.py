"""Distributed data parallel training with PyTorch's own engine, set up from torchrun.

``torchrun --nproc-per-node N -m torchstn train ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment; :func:`session` joins them into a
process group (gloo on the CPU, NCCL on CUDA, each rank on ``cuda:LOCAL_RANK``). Without
those variables it is a world of one and nothing is initialised.

The engine's rules: every rank takes a disjoint shard of each global batch
(``batch_size / world`` images), gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel`, metric sums are all-reduced, and only
the primary rank (rank 0) writes files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["World", "is_primary_process", "resolve_device", "session"]


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def primary(self) -> bool:
        """Whether this rank writes the run's files (rank 0)."""
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel when there is more than one rank."""
        if self.size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """``values`` summed over the ranks (float64; ints stay exact below 2**53)."""
        if self.size == 1:
            return values
        keys = sorted(values)
        every = [None] * self.size
        dist.all_gather_object(every, keys)
        if any(k != keys for k in every):
            raise ValueError(f"the ranks report different metric sums: {every}")
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                         device=self.device)
        dist.all_reduce(t)
        return dict(zip(keys, t.tolist()))

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (running statistics, ...) on every rank, so that a sharded
        evaluation scores the model rank 0 saves."""
        if self.size > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def is_primary_process() -> bool:
    """Whether this process is rank 0 of a torchrun launch (or not under torchrun at all):
    for what happens outside a :func:`session` (messages, tables)."""
    return os.environ.get("RANK", "0") == "0"


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"``; plain ``"cuda"`` under torchrun means
    ``cuda:LOCAL_RANK``. A CUDA device without CUDA is an error here, not a crash later."""
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device is {device!r} but CUDA is not available here "
                         "(torch.cuda.is_available() is False)")
    return torch.device(f"cuda:{local_rank}" if device == "cuda" else device)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an int, got {value!r}") from None


@contextmanager
def session(device: str) -> Iterator[World]:
    """The :class:`World` of this process, with its process group while the block runs.

    A process group that already exists (the caller's own) is used and left alone.
    """
    size = _env_int("WORLD_SIZE", 1)
    if size == 1 and not dist.is_initialized():
        yield World(device=resolve_device(device))
        return
    local_rank = _env_int("LOCAL_RANK", 0)
    if size > 1 and re.fullmatch(r"cuda:\d+", str(device)):
        raise ValueError(f"device must be 'cpu' or 'cuda' under torchrun (each rank takes "
                         f"cuda:LOCAL_RANK), got {device!r}")
    where = resolve_device(device, local_rank)
    created = False
    if not dist.is_initialized():
        if where.type == "cuda":
            torch.cuda.set_device(where)
        dist.init_process_group("nccl" if where.type == "cuda" else "gloo")
        created = True
    world = World(rank=dist.get_rank(), size=dist.get_world_size(), device=where)
    try:
        yield world
    except BaseException:
        if created:  # local, no collective: torchrun stops the other ranks
            dist.destroy_process_group()
        raise
    if created:
        world.barrier()  # no rank leaves while another still works (rank 0's figures)
        dist.destroy_process_group()
