"""Data-parallel training under `torchrun`: process group, DDP wrapper, cross-rank sums.

Nothing here is active in a plain run (WORLD_SIZE unset or 1): the helpers degrade to
no-ops, so the loop has one code path. Under `torchrun --nproc_per_node=N` each process
trains a replica on its slice of the global batch (see `data.get_batch`), DDP averages the
gradients, and scalars the loop decides on (loss, eval sums, the stop flag) are reduced or
broadcast so every rank takes the same branch.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from platform_core.errors import AppError, ErrorCode

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    device: torch.device  # this process's device (cuda:LOCAL_RANK under DDP on GPUs)
    rank: int = 0  # this process among all of them
    world_size: int = 1  # processes training together
    local_rank: int = 0  # this process on its machine: picks the GPU
    owns_group: bool = False  # we created the process group, so we tear it down
    # the latest collective's tensor, held until the group is gone (see shutdown_distributed)
    last_buffer: list[Tensor] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_size_from_env() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as e:
        raise AppError(ErrorCode.CONFIG_INVALID, "WORLD_SIZE must be an integer") from e


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA), if any."""
    world_size = world_size_from_env()
    if world_size <= 1:
        return DistContext(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise AppError(
                ErrorCode.DEVICE_UNAVAILABLE,
                f"LOCAL_RANK {local_rank} has no GPU ({torch.cuda.device_count()} visible)",
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    ctx = DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=device,
        owns_group=owns,
    )
    logger.info(
        "joined the process group",
        extra={"event": "train.ddp_init", "rank": ctx.rank, "world_size": ctx.world_size},
    )
    return ctx


def shutdown_distributed(ctx: DistContext) -> None:
    """Destroy the group we created. Call after the DDP wrapper is unreachable.

    Order matters (a gloo deadlock otherwise, seen with torch 2.13): gloo's worker thread
    frees each finished collective, and freeing a tensor Python once owned needs the GIL;
    if the group's destructor joins that thread while holding the GIL, both wait forever.
    So: collect the dropped DDP wrapper (its reducer holds the group), destroy the group here
    while our last collective tensor is still referenced, and only then let that tensor go.
    """
    if not ctx.enabled:
        return
    gc.collect()
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
    ctx.last_buffer.clear()


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DDP around `model` when several processes train; the model itself otherwise."""
    if not ctx.enabled:
        return model
    device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    # DDP broadcasts rank 0's weights here, so every replica starts identical
    return DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum over ranks (float64 so token-loss sums stay exact enough)."""
    if not ctx.enabled:
        return values
    # nccl reduces only on the GPU; gloo only on the CPU
    buffer = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    ctx.last_buffer[:] = [buffer]  # the previous one's work has been freed by now
    return [float(v) for v in buffer.tolist()]


def all_reduce_mean(value: float, ctx: DistContext) -> float:
    if not ctx.enabled:
        return value
    return all_reduce_sum([value], ctx)[0] / ctx.world_size


def broadcast_flag(flag: bool, ctx: DistContext) -> bool:
    """Rank 0's decision, seen by every rank."""
    if not ctx.enabled:
        return flag
    buffer = torch.tensor([1 if flag else 0], dtype=torch.int64, device=ctx.device)
    dist.broadcast(buffer, src=0)
    ctx.last_buffer[:] = [buffer]
    return bool(buffer.item())
