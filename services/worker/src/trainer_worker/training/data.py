"""Token-id data for causal LM training: random blocks for training, fixed blocks for eval.

The corpus arrives as one 1-D tensor of token ids. Training samples random windows of
`block_size + 1` tokens (input = first T, target = the same shifted by one), as nanoGPT's
`get_batch` does: no epochs to shuffle, and every offset can be drawn. Evaluation walks
non-overlapping blocks in order, so the same holdout always gives the same loss.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from platform_core.errors import AppError, ErrorCode
from trainer_worker.training.seeding import make_generator, seed_worker


def check_token_ids(ids: Tensor, name: str, min_tokens: int) -> None:
    """Refuse data the loop cannot use, with a message that names the split."""
    if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise AppError(
            ErrorCode.DATA_INVALID,
            f"{name} must be a 1-D integer tensor of token ids, got {ids.dtype} {tuple(ids.shape)}",
        )
    if ids.numel() < min_tokens:
        raise AppError(
            ErrorCode.DATA_INVALID,
            f"{name} has {ids.numel()} tokens; need at least {min_tokens} "
            "(use a larger corpus or a smaller block_size)",
        )
    if int(ids.min()) < 0:
        raise AppError(ErrorCode.DATA_INVALID, f"{name} holds negative token ids")


def get_batch(
    ids: Tensor,
    block_size: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[Tensor, Tensor]:
    """One micro-batch of random windows: x (B, T) and y = x shifted left by one (B, T).

    Every process draws the offsets of the whole global batch (world_size x B) from the same
    generator and keeps its own slice, so N processes see exactly the data one process with
    an N-times larger batch would see.
    """
    ix = torch.randint(ids.numel() - block_size, (world_size * batch_size,), generator=generator)
    offsets = ix[rank * batch_size : (rank + 1) * batch_size].tolist()
    x = torch.stack([ids[i : i + block_size] for i in offsets]).long()
    y = torch.stack([ids[i + 1 : i + 1 + block_size] for i in offsets]).long()
    if device.type == "cuda":
        # pinned host memory lets the copy overlap with the previous step's compute
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(
            device, non_blocking=True
        )
    return x, y


class BlockDataset(Dataset[tuple[Tensor, Tensor]]):
    """Non-overlapping windows: item i is (ids[iT : iT+T], ids[iT+1 : iT+T+1]).

    Consecutive blocks share one token (the last target of block i is the first input of
    block i+1), so every token after the first is predicted exactly once.
    """

    def __init__(self, ids: Tensor, block_size: int) -> None:
        self.ids = ids
        self.block_size = block_size

    def __len__(self) -> int:
        return max(0, (self.ids.numel() - 1) // self.block_size)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        start = index * self.block_size
        chunk = self.ids[start : start + self.block_size + 1].long()
        return chunk[:-1], chunk[1:]


def eval_loader(
    ids: Tensor,
    block_size: int,
    batch_size: int,
    max_batches: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
    seed: int = 0,
) -> DataLoader[tuple[Tensor, Tensor]]:
    """The first `max_batches` global batches of holdout blocks, this process's share.

    Blocks are dealt round-robin over processes, so the all-reduced sum over processes
    covers the same blocks a single process would evaluate.
    """
    dataset = BlockDataset(ids, min(block_size, ids.numel() - 1))
    limit = min(len(dataset), max_batches * batch_size * world_size)
    shard = Subset(dataset, list(range(rank, limit, world_size)))
    return DataLoader(
        shard,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker,
        generator=make_generator(seed),
        persistent_workers=num_workers > 0,
    )
