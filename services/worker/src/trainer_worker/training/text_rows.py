"""Tasks over encoded texts (the classifier, the dual-agent model): one row of `block_size`
token ids per text, a training batch being rows drawn at random. What every such task checks
before step 0 and how it draws its batch, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

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
    return _this_rank(ix, config, ctx)


def _this_rank(global_batch: Tensor, config: TrainConfig, ctx: DistContext) -> Tensor:
    return global_batch[ctx.rank * config.batch_size : (ctx.rank + 1) * config.batch_size]


MAX_LENGTH_BUCKETS: Final = 8  # more buckets trim little more padding
MIN_BUCKET_BATCHES: Final = 4  # a bucket holds at least this many global batches of rows


@dataclass(frozen=True)
class LengthBuckets:
    """Rows grouped by their unpadded length (equal-count groups of the length order), so a
    batch drawn from one group can be cut to its longest row (`trim_width`) and skip most of
    the padding the rows were encoded with. A batch draws its group with odds by the
    group's size, then its rows uniformly from the group, with replacement: every row is as
    likely in a batch as with `draw_rows`, only the rows that share a batch have similar
    lengths (as `group_by_length` in transformers' Trainer). The draw uses the shared
    generator only, so a resumed run draws what the uninterrupted one would have."""

    groups: tuple[Tensor, ...]  # row indices of each group, shortest rows first
    sizes: Tensor  # (groups,) float rows per group: the odds of a group

    @classmethod
    def of(
        cls, attention_mask: Tensor, config: TrainConfig, ctx: DistContext
    ) -> LengthBuckets | None:
        """The groups of these rows (N, T), or None when fewer than two groups would each
        hold `MIN_BUCKET_BATCHES` global batches (a small split draws as `draw_rows`)."""
        rows = int(attention_mask.size(0))
        count = min(
            MAX_LENGTH_BUCKETS, rows // (MIN_BUCKET_BATCHES * ctx.world_size * config.batch_size)
        )
        if count < 2:
            return None
        order = attention_mask.sum(dim=1).argsort(stable=True)
        groups = tuple(order.tensor_split(count))
        sizes = torch.tensor([float(len(g)) for g in groups])
        return cls(groups, sizes)

    def draw(self, config: TrainConfig, generator: torch.Generator, ctx: DistContext) -> Tensor:
        """This process's row indices of one global batch, (batch_size,), as `draw_rows`."""
        group = self.groups[int(torch.multinomial(self.sizes, 1, generator=generator))]
        pick = torch.randint(len(group), (ctx.world_size * config.batch_size,), generator=generator)
        return _this_rank(group[pick], config, ctx)


def trim_width(attention_mask: Tensor) -> int:
    """The columns a batch of padded rows (B, T) needs: up to its last column that any row
    attends to (at least 1). Columns past it are padding every row masks out; a left-padded
    batch keeps them all."""
    used = attention_mask.any(dim=0).nonzero()
    return int(used[-1]) + 1 if len(used) else 1
