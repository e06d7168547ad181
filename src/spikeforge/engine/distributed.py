"""Data-parallel training across processes (``torchrun --nproc_per_node N -m spikeforge run RECIPE``).

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` joins the process group (NCCL on GPUs, gloo
on CPUs). The recipe's ``batch_size`` is the *global* batch: each rank trains on ``batch_size / world_size`` samples
of its own shard, and DistributedDataParallel averages the gradients, so the update equals a single process with the
same global batch. Evaluation splits the test batches over the ranks and sums the counts. Only rank 0 writes
checkpoints, metrics and reports; the other ranks wait at barriers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from spikeforge.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup() -> DistInfo:
    """Join the process group if launched by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return DistInfo(rank, world, local)


def info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def is_main() -> bool:
    return info().is_main


def barrier() -> None:
    if info().enabled:
        dist.barrier()


def all_reduce_sum(values: list[float], device) -> list[float]:
    """Sum a few numbers over the ranks (identity in a single process)."""
    if not info().enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def local_batch_size(global_batch: int, world_size: int) -> int:
    if global_batch % world_size:
        raise ConfigError(f"data.batch_size {global_batch} must be divisible by the number of processes "
                          f"({world_size}) in distributed training")
    return global_batch // world_size


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module to call for training: DistributedDataParallel when distributed, else the model itself."""
    if not info().enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
