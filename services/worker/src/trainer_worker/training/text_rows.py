"""Tasks over encoded texts (the classifier, the dual-agent model): one row of `block_size`
token ids per text, a training batch being rows drawn at random. What every such task checks
before step 0 and how it draws its batch, in one place."""

from __future__ import annotations

import torch
from torch import Tensor

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import TrainConfig
from trainer_worker.training.distributed import DistContext


def check_rows(input_ids: Tensor, config: TrainConfig, what: str) -> None:
    """Refuse an empty train split (DATA_INVALID) and rows encoded to another width than
    `train.block_size` (CONFIG_INVALID); `what` names the rows ("texts", "posts")."""
    if int(input_ids.size(0)) == 0:
        raise AppError(ErrorCode.DATA_INVALID, f"the train split holds no {what}")
    width = int(input_ids.size(1))  # input_ids: (N, T)
    if width != config.block_size:
        raise AppError(
            ErrorCode.CONFIG_INVALID,
            f"{what} were encoded to {width} tokens but train.block_size is {config.block_size}",
        )


def draw_rows(
    rows: int, config: TrainConfig, generator: torch.Generator, ctx: DistContext
) -> Tensor:
    """This process's row indices of one global batch, (batch_size,): the global batch is
    drawn on every rank from the shared generator (checkpointed with the run, so a resumed
    run draws what the uninterrupted one would have); each rank keeps its slice."""
    ix = torch.randint(rows, (ctx.world_size * config.batch_size,), generator=generator)
    return ix[ctx.rank * config.batch_size : (ctx.rank + 1) * config.batch_size]
