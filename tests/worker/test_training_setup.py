"""What the loop stands on: config validation, devices and precision, the LR schedule,
seeding and RNG capture, batching, and the resumable training state."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import TrainConfig
from trainer_worker.training.data import BlockDataset, check_token_ids, eval_loader, get_batch
from trainer_worker.training.device import (
    loader_settings,
    resolve_device,
    resolve_device_setup,
    resolve_precision,
    suggested_batch_size,
)
from trainer_worker.training.evaluate import perplexity
from trainer_worker.training.schedule import cosine_lr, get_lr
from trainer_worker.training.seeding import (
    RngState,
    capture_rng_state,
    make_generator,
    restore_rng_state,
    seed_everything,
)
from trainer_worker.training.state import TrainState, capture_train_state

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


# --- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"batch_size": 0},
        {"max_steps": 0},
        {"min_lr": 1.0, "learning_rate": 0.1},
        {"warmup_steps": 10, "lr_decay_steps": 10},
        {"beta2": 1.0},
        {"grad_clip": -1.0},
        {"early_stopping_patience": 0},
        {"progress_every_s": 0.0},
    ],
)
def test_train_config_refuses_bad_values(fields: dict[str, float]) -> None:
    with pytest.raises(ValidationError, match=next(iter(fields))):
        TrainConfig(**fields)  # type: ignore[arg-type]  # parametrized mix of int/float fields


def test_train_config_serialises_for_manifests() -> None:
    config = TrainConfig(max_steps=7, device="cpu")
    assert config.to_dict()["max_steps"] == 7
    assert TrainConfig(**config.to_dict()) == config  # type: ignore[arg-type]  # round trip
    assert config.decay_steps == 7
    assert TrainConfig(lr_decay_steps=500).decay_steps == 500


# --- device and precision -------------------------------------------------------------------


def test_cuda_requested_without_gpu_is_device_unavailable() -> None:
    with pytest.raises(AppError) as err:
        resolve_device("cuda", cuda_available=False)
    assert err.value.code is ErrorCode.DEVICE_UNAVAILABLE
    assert resolve_device("auto", cuda_available=False) == CPU
    assert resolve_device("auto", cuda_available=True) == CUDA
    assert resolve_device("cpu", cuda_available=True) == CPU


def test_cuda_requested_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AppError) as err:
        resolve_device_setup("cuda", "auto")
    assert err.value.code is ErrorCode.DEVICE_UNAVAILABLE


@pytest.mark.parametrize(
    ("choice", "device", "bf16", "expected"),
    [
        ("auto", CPU, False, "fp32"),
        ("fp32", CPU, False, "fp32"),
        ("auto", CPU, True, "fp32"),  # a CPU's bf16 only when asked for by name
        ("bf16", CPU, True, "bf16"),
        ("auto", CUDA, True, "bf16"),
        ("auto", CUDA, False, "fp16"),
        ("fp16", CUDA, True, "fp16"),
        ("bf16", CUDA, True, "bf16"),
        ("fp32", CUDA, True, "fp32"),
    ],
)
def test_precision_resolution(choice: str, device: torch.device, bf16: bool, expected: str) -> None:
    assert resolve_precision(choice, device, bf16) == expected  # type: ignore[arg-type]  # str from parametrize


@pytest.mark.parametrize(
    ("choice", "device", "bf16"),
    [("fp16", CPU, False), ("fp16", CPU, True), ("bf16", CPU, False), ("bf16", CUDA, False)],
)
def test_precision_refused_where_unsupported(choice: str, device: torch.device, bf16: bool) -> None:
    with pytest.raises(AppError) as err:
        resolve_precision(choice, device, bf16)  # type: ignore[arg-type]  # str from parametrize
    assert err.value.code is ErrorCode.CONFIG_INVALID


def test_cpu_setup_and_loader_settings() -> None:
    setup = resolve_device_setup("cpu", "auto")
    assert (setup.device, setup.precision, setup.autocast_dtype) == (CPU, "fp32", None)
    assert not setup.use_grad_scaler
    assert (setup.num_workers, setup.pin_memory) == (0, False)
    assert loader_settings(CUDA, cpu_count=16) == (4, True)
    assert loader_settings(CUDA, cpu_count=2) == (2, True)
    assert suggested_batch_size("gpt2", 8, CUDA) == 32
    assert suggested_batch_size("char_lstm", 8, CUDA) == 64
    assert suggested_batch_size("other", 8, CUDA) == 16
    assert suggested_batch_size("gpt2", 128, CUDA) == 128
    assert suggested_batch_size("gpt2", 8, CPU) == 8


# --- schedule -----------------------------------------------------------------------------


def test_warmup_then_cosine_to_min_lr() -> None:
    def lr(step: int) -> float:
        return cosine_lr(step, learning_rate=1.0, min_lr=0.1, warmup_steps=10, decay_steps=110)

    assert lr(0) == pytest.approx(1 / 11)
    assert lr(9) == pytest.approx(10 / 11)
    assert lr(10) == pytest.approx(1.0)  # peak at the end of warmup
    assert lr(60) == pytest.approx(0.55)  # halfway through the cosine: the mean of peak and floor
    assert lr(110) == pytest.approx(0.1)
    assert lr(5000) == pytest.approx(0.1)
    warm = [lr(s) for s in range(11)]
    decay = [lr(s) for s in range(10, 111)]
    assert warm == sorted(warm)
    assert decay == sorted(decay, reverse=True)


def test_get_lr_decays_over_max_steps_by_default() -> None:
    config = TrainConfig(max_steps=100, warmup_steps=0, learning_rate=1e-3, min_lr=1e-4)
    assert get_lr(0, config) == pytest.approx(1e-3)
    assert get_lr(50, config) == pytest.approx(5.5e-4)
    assert get_lr(100, config) == pytest.approx(1e-4)


# --- seeding and RNG state ------------------------------------------------------------------


def _draws(sampler: torch.Generator) -> tuple[float, float, list[float], list[int]]:
    return (
        random.random(),
        float(np.random.rand()),
        torch.rand(3).tolist(),
        torch.randint(100, (3,), generator=sampler).tolist(),
    )


def test_seed_everything_repeats_every_generator() -> None:
    seed_everything(7)
    first = _draws(make_generator(7))
    seed_everything(7)
    assert _draws(make_generator(7)) == first
    seed_everything(8)
    assert _draws(make_generator(8)) != first


def test_rng_state_round_trips_through_a_weights_only_checkpoint() -> None:
    seed_everything(3)
    sampler = make_generator(3)
    _draws(sampler)
    buffer = io.BytesIO()
    torch.save(capture_rng_state(sampler).state_dict(), buffer)
    expected = _draws(sampler)
    _draws(sampler)  # move every generator on
    buffer.seek(0)
    state = RngState.from_state_dict(torch.load(buffer, weights_only=True))
    restore_rng_state(state, sampler)
    assert _draws(sampler) == expected


def test_malformed_rng_state_is_checkpoint_corrupt() -> None:
    with pytest.raises(AppError) as err:
        RngState.from_state_dict({"python": (3,)})
    assert err.value.code is ErrorCode.CHECKPOINT_CORRUPT


def test_train_state_round_trips_with_optimizer_moments() -> None:
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(3, 4)).sum().backward()
    optimizer.step()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    sampler = make_generator(0)
    state = capture_train_state(
        step=5,
        optimizer=optimizer,
        scaler=scaler,
        sampler=sampler,
        tokens_seen=640,
        best_eval_loss=2.5,
        evals_without_improvement=1,
    )
    buffer = io.BytesIO()
    torch.save(state.state_dict(), buffer)
    buffer.seek(0)
    loaded = TrainState.from_state_dict(torch.load(buffer, weights_only=True))
    assert (loaded.step, loaded.tokens_seen, loaded.best_eval_loss) == (5, 640, 2.5)
    assert loaded.evals_without_improvement == 1 and loaded.scaler is None
    fresh = torch.optim.AdamW(model.parameters(), lr=0.1)
    fresh.load_state_dict(loaded.optimizer)
    torch.testing.assert_close(
        fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )
    with pytest.raises(AppError) as err:
        TrainState.from_state_dict({**state.state_dict(), "version": 99})
    assert err.value.code is ErrorCode.CHECKPOINT_CORRUPT


# --- data -----------------------------------------------------------------------------------


def test_get_batch_windows_are_shifted_by_one() -> None:
    ids = torch.arange(1000)
    x, y = get_batch(ids, 16, 4, make_generator(0), CPU)
    assert x.shape == y.shape == (4, 16)
    assert x.dtype == torch.long
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y[:, -1], x[:, -1] + 1)  # arange: each window is contiguous
    assert int(y.max()) <= 999


def test_get_batch_ranks_split_one_global_batch() -> None:
    ids = torch.arange(500)
    whole_x, _ = get_batch(ids, 8, 6, make_generator(1), CPU)
    parts = [
        get_batch(ids, 8, 3, make_generator(1), CPU, rank=r, world_size=2)[0] for r in range(2)
    ]
    assert torch.equal(torch.cat(parts), whole_x)


def test_block_dataset_predicts_every_token_once() -> None:
    ids = torch.arange(21)
    blocks = BlockDataset(ids, 5)
    assert len(blocks) == 4
    x0, y0 = blocks[0]
    x3, y3 = blocks[3]
    assert x0.tolist() == [0, 1, 2, 3, 4] and y0.tolist() == [1, 2, 3, 4, 5]
    assert x3.tolist() == [15, 16, 17, 18, 19] and y3.tolist() == [16, 17, 18, 19, 20]
    targets = torch.cat([blocks[i][1] for i in range(len(blocks))])
    assert targets.tolist() == list(range(1, 21))


def test_eval_loader_shards_cover_the_single_process_blocks() -> None:
    """2 processes x batch 2 evaluate exactly the blocks 1 process x batch 4 does."""
    ids = torch.arange(200)
    single = [x for x, _ in eval_loader(ids, 10, 4, max_batches=3)]
    sharded = [
        x for rank in range(2) for x, _ in eval_loader(ids, 10, 2, 3, rank=rank, world_size=2)
    ]
    single_rows = [tuple(row.tolist()) for batch in single for row in batch]
    sharded_rows = [tuple(row.tolist()) for batch in sharded for row in batch]
    assert len(single_rows) == len(sharded_rows) == 12
    assert sorted(sharded_rows) == sorted(single_rows)
    assert single_rows[0] == tuple(range(10))


def test_short_holdout_uses_one_shorter_block() -> None:
    loader = eval_loader(torch.arange(7), block_size=32, batch_size=4, max_batches=2)
    (x, y), *rest = list(loader)
    assert x.shape == (1, 6) and not rest
    assert y.tolist() == [[1, 2, 3, 4, 5, 6]]


@pytest.mark.parametrize(
    ("ids", "fragment"),
    [
        (torch.zeros((2, 50), dtype=torch.long), "1-D integer"),
        (torch.zeros(50, dtype=torch.float32), "1-D integer"),
        (torch.zeros(5, dtype=torch.long), "need at least 10"),
        (torch.full((20,), -1), "negative"),
    ],
)
def test_check_token_ids_refuses_unusable_data(ids: torch.Tensor, fragment: str) -> None:
    with pytest.raises(AppError) as err:
        check_token_ids(ids, "train_ids", 10)
    assert err.value.code is ErrorCode.DATA_INVALID
    assert fragment in err.value.message


def test_perplexity_is_exp_of_loss() -> None:
    assert perplexity(2.0) == pytest.approx(math.exp(2.0))
    assert perplexity(1e4) == math.inf
