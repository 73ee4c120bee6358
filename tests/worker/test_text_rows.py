"""The checks and the batch draw that the encoded-text tasks (classifier, dual-agent) share."""

from __future__ import annotations

import pytest
import torch

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import TrainConfig
from trainer_worker.training.distributed import DistContext
from trainer_worker.training.text_rows import (
    MAX_LENGTH_BUCKETS,
    LengthBuckets,
    check_rows,
    draw_rows,
    trim_width,
)

CPU = torch.device("cpu")


def test_rows_of_the_configured_width_pass() -> None:
    check_rows(torch.zeros((3, 16), dtype=torch.long), TrainConfig(block_size=16), "texts")


def test_an_empty_train_split_is_refused_naming_the_rows() -> None:
    with pytest.raises(AppError) as caught:
        check_rows(torch.zeros((0, 16), dtype=torch.long), TrainConfig(block_size=16), "posts")
    assert caught.value.code is ErrorCode.DATA_INVALID
    assert caught.value.message == "the train split holds no posts"


def test_rows_of_another_width_than_block_size_are_refused() -> None:
    with pytest.raises(AppError) as caught:
        check_rows(torch.zeros((3, 8), dtype=torch.long), TrainConfig(block_size=16), "texts")
    assert caught.value.code is ErrorCode.CONFIG_INVALID
    assert caught.value.message == "texts were encoded to 8 tokens but train.block_size is 16"


def test_each_rank_keeps_its_slice_of_one_global_draw() -> None:
    """Two ranks drawing from equal generators hold the two halves of the one global batch
    a single process drawing world_size * batch_size rows would hold."""
    config = TrainConfig(batch_size=4, block_size=16)
    ranks = [
        draw_rows(50, config, torch.Generator().manual_seed(7), DistContext(CPU, rank, 2))
        for rank in (0, 1)
    ]
    whole = torch.randint(50, (8,), generator=torch.Generator().manual_seed(7))
    assert [r.shape for r in ranks] == [torch.Size([4]), torch.Size([4])]
    assert torch.equal(torch.cat(ranks), whole)
    assert int(whole.max()) < 50


def _right_padded(lengths: list[int], width: int) -> torch.Tensor:
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()


def test_length_buckets_partition_the_rows_by_length() -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 33, (1000,), generator=generator).tolist()
    mask = _right_padded(lengths, 32)
    buckets = LengthBuckets.of(mask, TrainConfig(batch_size=8, block_size=32), DistContext(CPU))
    assert buckets is not None and len(buckets.groups) == MAX_LENGTH_BUCKETS
    rows = torch.cat(buckets.groups)
    assert sorted(rows.tolist()) == list(range(1000))  # every row once
    longest = [max(lengths[i] for i in g.tolist()) for g in buckets.groups]
    shortest = [min(lengths[i] for i in g.tolist()) for g in buckets.groups]
    assert all(a <= b for a, b in zip(longest, shortest[1:], strict=False))  # ordered by length
    assert [int(s) for s in buckets.sizes] == [len(g) for g in buckets.groups]


def test_a_split_too_small_for_two_buckets_draws_as_draw_rows() -> None:
    config = TrainConfig(batch_size=8, block_size=32)
    mask = _right_padded([5] * 63, 32)  # 63 < 2 buckets x 4 batches x 8 rows
    assert LengthBuckets.of(mask, config, DistContext(CPU)) is None
    assert LengthBuckets.of(_right_padded([5] * 64, 32), config, DistContext(CPU)) is not None
    # the global batch counts: two ranks need twice the rows
    assert LengthBuckets.of(_right_padded([5] * 64, 32), config, DistContext(CPU, 0, 2)) is None


def test_a_bucketed_batch_shares_one_bucket_and_rows_stay_equally_likely() -> None:
    """Each batch comes from one group; over many batches every row is drawn about as
    often as any other (the group's odds follow its size, rows are uniform within it)."""
    config = TrainConfig(batch_size=16, block_size=32)
    lengths = [1 + (i * 7) % 32 for i in range(400)]
    buckets = LengthBuckets.of(_right_padded(lengths, 32), config, DistContext(CPU))
    assert buckets is not None
    group_of = {int(r): n for n, g in enumerate(buckets.groups) for r in g}
    generator = torch.Generator().manual_seed(3)
    counts = torch.zeros(400)
    for _ in range(4000):
        rows = buckets.draw(config, generator, DistContext(CPU))
        assert rows.shape == (16,)
        assert len({group_of[int(r)] for r in rows}) == 1
        counts += torch.bincount(rows, minlength=400)
    expected = 4000 * 16 / 400  # 160 a row
    assert abs(float(counts.mean()) - expected) < 1e-6
    assert float(counts.min()) > expected * 0.6 and float(counts.max()) < expected * 1.5


def test_bucketed_ranks_hold_the_halves_of_one_global_batch() -> None:
    config = TrainConfig(batch_size=4, block_size=32)
    mask = _right_padded([1 + i % 32 for i in range(200)], 32)
    buckets = LengthBuckets.of(mask, config, DistContext(CPU, 0, 2))
    assert buckets is not None
    halves = [
        buckets.draw(config, torch.Generator().manual_seed(9), DistContext(CPU, rank, 2))
        for rank in (0, 1)
    ]
    one = TrainConfig(batch_size=8, block_size=32)
    whole = buckets.draw(one, torch.Generator().manual_seed(9), DistContext(CPU))
    assert torch.equal(torch.cat(halves), whole)


def test_trim_width_keeps_the_columns_any_row_attends_to() -> None:
    assert trim_width(_right_padded([3, 7, 2], 16)) == 7
    assert trim_width(_right_padded([16, 1], 16)) == 16
    left_padded = _right_padded([3, 7], 16).flip(dims=[1])
    assert trim_width(left_padded) == 16  # real tokens at the right end: nothing to cut
    assert trim_width(torch.zeros((2, 16), dtype=torch.long)) == 1
