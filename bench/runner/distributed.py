"""Data-parallel training under torchrun: process group, gradient averaging, rank-0-only side effects.

`bench run` detects torchrun through `RANK`/`WORLD_SIZE`/`LOCAL_RANK` and joins a process group: gloo
on CPU, nccl on CUDA. Each optimiser step averages the gradients of its parameters over all ranks
before stepping; that is the synchronous data parallelism DDP does, applied at the step rather than by
a module wrapper, because the zoo's losses take second derivatives (gradient penalty, R1) and step
several optimisers per iteration, which the DDP wrapper does not support.

Every rank draws the *global* batch indices and noise from the same seeded generators and keeps its
own slice, so N ranks with batch B/N each see exactly the data and noise one process with batch B
sees, and the generator states (and so checkpoints) agree across ranks. BatchNorm statistics stay per
rank (SyncBatchNorm needs CUDA), so BN families match a single process only approximately; families
without BN match to float tolerance (tested with `mlp_gan`).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


SINGLE = World()
_current = SINGLE


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device_type: str) -> World:
    """Join the torchrun process group once (idempotent); a plain process is a world of one."""
    global _current
    if not launched_by_torchrun():
        return SINGLE
    if not dist.is_initialized():
        # Evaluation runs on rank 0 while the others wait; give it hours, not the 30-minute default.
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo",
                                timeout=datetime.timedelta(hours=6))
    _current = World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(_current.local_rank)
    return _current


def current() -> World:
    return _current


def average_gradients(params: Iterable[torch.nn.Parameter], world: World) -> None:
    """All-reduce the gradients of `params` and divide by the world size (one flat buffer per call)."""
    if not world.active:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def local_slice(n_local: int, world: World) -> slice:
    return slice(world.rank * n_local, (world.rank + 1) * n_local)


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def gather_objects(obj: Any, world: World) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (used to checkpoint per-rank RNG states)."""
    if not world.active:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj: Any, world: World) -> list[Any] | None:
    """Every rank's `obj` in rank order on rank 0 (None elsewhere)."""
    if not world.active:
        return [obj]
    out: list[Any] | None = [None] * world.size if world.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's `obj` on every rank."""
    if not world.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown() -> None:
    global _current
    if dist.is_initialized():
        dist.destroy_process_group()
    _current = SINGLE
