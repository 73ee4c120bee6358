"""The checks and the batch draw that the encoded-text tasks (classifier, dual-agent) share."""

from __future__ import annotations

import pytest
import torch

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import TrainConfig
from trainer_worker.training.distributed import DistContext
from trainer_worker.training.text_rows import check_rows, draw_rows

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
