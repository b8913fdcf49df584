"""Distributed training through PyTorch's own engine (torchrun + DistributedDataParallel).

``torchrun --nproc_per_node=N -m minimipt train ...`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; :func:`init` then joins the process group (NCCL on CUDA, gloo on CPU). A plain
``python -m minimipt train`` sees no ``WORLD_SIZE`` and runs as a single process, unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init", "shutdown", "all_reduce_mean", "parameters_in_sync"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group if launched by torchrun; returns the info and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, local, world), device


def shutdown() -> None:
    """Leave the process group together: a rank that tears down its communicator (and exits) while
    another is still writing a checkpoint can abort in the backend's threads (seen with gloo)."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "nccl":  # name the device, or NCCL guesses one and warns
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (a no-op on one process)."""
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


@torch.no_grad()
def parameters_in_sync(model: torch.nn.Module, info: DistInfo) -> bool:
    """True when every rank holds the same parameters (compared through a float64 checksum)."""
    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    weights = torch.arange(1, flat.numel() + 1, device=flat.device, dtype=torch.float64).remainder(97) + 1
    mine = torch.stack([flat.sum(), (flat * weights).sum()])
    if not info.enabled:
        return True
    gathered = [torch.empty_like(mine) for _ in range(info.world_size)]
    dist.all_gather(gathered, mine)
    return all(torch.equal(g, gathered[0]) for g in gathered)
