"""The training loop on real tiny models and real text, on the CPU."""

from __future__ import annotations

import io
import itertools
import math
from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import ModelSpec, TrainConfig
from tests.worker.train_helpers import train_eval_split
from trainer_worker.models.registry import build_model
from trainer_worker.training import device as device_module
from trainer_worker.training.callbacks import (
    Callbacks,
    CheckpointInfo,
    EvalInfo,
    ProgressInfo,
    TrainResult,
)
from trainer_worker.training.device import cpu_has_bf16
from trainer_worker.training.loop import train
from trainer_worker.training.seeding import seed_everything
from trainer_worker.training.state import TrainState

TRAIN_IDS, EVAL_IDS = train_eval_split(40_000)
VOCAB = 256  # byte ids
BASE = TrainConfig(
    block_size=32,
    batch_size=8,
    max_steps=6,
    learning_rate=3e-3,
    min_lr=3e-4,
    warmup_steps=2,
    eval_every=3,
    eval_batches=2,
    progress_every_steps=1000,
    progress_every_s=86_400.0,  # the longest allowed: progress by step count only
    device="cpu",
    seed=11,
)


def _model(family: str = "gpt2", dropout: float | None = None, seed: int = 0) -> nn.Module:
    seed_everything(seed)
    return build_model(ModelSpec(family=family, dropout=dropout), VOCAB, eos_id=10)  # type: ignore[arg-type]  # family is one of the literals


def _run(
    model: nn.Module, config: TrainConfig = BASE, callbacks: Callbacks | None = None
) -> TrainResult:
    return train(model, TRAIN_IDS, EVAL_IDS, config, callbacks)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "char_lstm"])
def test_eval_loss_falls_well_below_step_zero(family: str) -> None:
    config = replace(BASE, max_steps=60, eval_every=30, eval_batches=4, warmup_steps=5)
    evals: list[EvalInfo] = []
    result = _run(_model(family), config, Callbacks(on_eval=evals.append))
    assert [e.step for e in evals] == [0, 30, 60]
    assert evals == result.eval_history
    assert evals[0].eval_loss > 5.0  # ~ln(256): an untrained model guesses uniformly
    assert evals[-1].eval_loss < evals[0].eval_loss - 1.5
    assert evals[-1].perplexity == pytest.approx(math.exp(evals[-1].eval_loss))
    assert evals[-1].train_loss is not None and evals[0].train_loss is None
    assert result.best_eval_loss == evals[-1].eval_loss
    assert (result.final_step, result.reason, result.stopped_early) == (60, "completed", False)
    assert len(result.losses) == 60 and result.tokens_per_s > 0 and result.duration_s > 0


def test_same_seed_gives_the_same_losses() -> None:
    """Dropout on, so the torch RNG matters as much as the batch sampler."""
    first = _run(_model(dropout=0.1), replace(BASE, max_steps=4))
    second = _run(_model(dropout=0.1), replace(BASE, max_steps=4))
    other = _run(_model(dropout=0.1), replace(BASE, max_steps=4, seed=12))
    assert first.losses == pytest.approx(second.losses, abs=1e-6)
    assert [e.eval_loss for e in first.eval_history] == pytest.approx(
        [e.eval_loss for e in second.eval_history], abs=1e-6
    )
    assert other.losses != pytest.approx(first.losses, abs=1e-6)


@pytest.mark.parametrize("ema_decay", [None, 0.9], ids=["live", "averaged"])
def test_resuming_from_a_checkpoint_repeats_the_uninterrupted_run(ema_decay: float | None) -> None:
    """With a moving average the checkpoint's model weights are the average and its state
    the live weights: both come back."""
    config = replace(BASE, max_steps=8, eval_every=4, checkpoint_every=4, ema_decay=ema_decay)
    saved: dict[int, bytes] = {}

    def save(info: CheckpointInfo) -> None:  # what the job will do: serialise right away
        buffer = io.BytesIO()
        torch.save({"model": info.model.state_dict(), "train": info.state.state_dict()}, buffer)
        saved[info.step] = buffer.getvalue()

    full_model = _model(dropout=0.1)
    full = _run(full_model, config, Callbacks(on_checkpoint=save))
    assert sorted(saved) == [4, 8]

    checkpoint = torch.load(io.BytesIO(saved[4]), weights_only=True)
    live = checkpoint["train"]["live_weights"]
    assert (live is None) is (ema_decay is None)
    if live is not None:
        assert any(not torch.equal(live[n], checkpoint["model"][n]) for n in live)
    resumed_model = _model(dropout=0.1, seed=99)  # different init: the weights must come back
    resumed_model.load_state_dict(checkpoint["model"])
    state = TrainState.from_state_dict(checkpoint["train"])
    resumed = train(resumed_model, TRAIN_IDS, EVAL_IDS, config, resume_from=state)

    assert (resumed.start_step, resumed.final_step) == (4, 8)
    assert resumed.losses == pytest.approx(full.losses[4:], abs=1e-6)
    assert resumed.eval_history[-1].eval_loss == pytest.approx(
        full.eval_history[-1].eval_loss, abs=1e-6
    )
    for a, b in zip(full_model.parameters(), resumed_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_should_stop_ends_the_run_between_steps_with_a_final_checkpoint() -> None:
    polls = itertools.count(1)
    checkpoints: list[CheckpointInfo] = []
    result = _run(
        _model("char_lstm"),
        replace(BASE, max_steps=50),
        Callbacks(should_stop=lambda: next(polls) > 3, on_checkpoint=checkpoints.append),
    )
    assert (result.final_step, result.stopped_early, result.reason) == (3, True, "cancelled")
    assert len(result.losses) == 3
    assert [(c.step, c.reason) for c in checkpoints] == [(3, "cancelled")]
    assert checkpoints[0].state.step == 3


class _FailingModel(nn.Module):
    """A real model whose training forward goes wrong after `after` calls."""

    def __init__(self, inner: nn.Module, after: int, failure: str) -> None:
        super().__init__()
        self.inner = inner
        self.after = after
        self.failure = failure
        self.calls = 0

    def forward(self, input_ids: Tensor) -> Tensor:
        logits: Tensor = self.inner(input_ids)
        if not self.training:
            return logits
        self.calls += 1
        if self.calls > self.after and self.failure == "nan":
            return logits * float("nan")
        if self.calls > self.after:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return logits


def test_nan_loss_raises_training_diverged_naming_the_step() -> None:
    model = _FailingModel(_model("char_lstm"), after=2, failure="nan")
    with pytest.raises(AppError) as err:
        _run(model, replace(BASE, max_steps=10))
    assert err.value.code is ErrorCode.TRAINING_DIVERGED
    assert "at step 3" in err.value.message


def test_out_of_memory_names_the_batch_size() -> None:
    model = _FailingModel(_model("char_lstm"), after=1, failure="oom")
    with pytest.raises(AppError) as err:
        _run(model, replace(BASE, batch_size=6))
    assert err.value.code is ErrorCode.OUT_OF_MEMORY
    assert "batch_size=6" in err.value.message and "at step 2" in err.value.message


def test_early_stopping_when_eval_loss_stalls() -> None:
    # learning rate 0: the holdout loss never moves, so every eval after the first is a miss
    config = replace(
        BASE,
        max_steps=50,
        learning_rate=0.0,
        min_lr=0.0,
        eval_every=2,
        early_stopping_patience=2,
    )
    checkpoints: list[CheckpointInfo] = []
    result = _run(_model("char_lstm"), config, Callbacks(on_checkpoint=checkpoints.append))
    assert (result.final_step, result.reason, result.stopped_early) == (4, "early_stopping", True)
    assert [e.improved for e in result.eval_history] == [True, False, False]
    assert [(c.step, c.reason) for c in checkpoints] == [(4, "final")]


def test_checkpoint_cadence_and_best_flag() -> None:
    config = replace(BASE, max_steps=6, eval_every=2, checkpoint_every=2)
    checkpoints: list[CheckpointInfo] = []
    _run(_model("char_lstm"), config, Callbacks(on_checkpoint=checkpoints.append))
    assert [(c.step, c.reason) for c in checkpoints] == [
        (2, "interval"),
        (4, "interval"),
        (6, "final"),
    ]
    assert all(c.is_best for c in checkpoints)  # the loss falls at every eval early on
    assert checkpoints[-1].eval_loss is not None
    assert "lstm.weight_ih_l0" in checkpoints[-1].model.state_dict()


def test_progress_every_n_steps() -> None:
    reports: list[ProgressInfo] = []
    _run(
        _model("char_lstm"),
        replace(BASE, progress_every_steps=2),
        Callbacks(on_progress=reports.append),
    )
    assert [r.step for r in reports] == [2, 4, 6]
    assert all(r.max_steps == 6 and math.isfinite(r.loss) for r in reports)
    # the update to step 2 used get_lr(1): still warming up, 2/3 of the peak
    assert reports[0].lr == pytest.approx(2e-3)
    assert reports[1].lr < 3e-3 and reports[1].lr > reports[2].lr  # cosine decay after it


def test_progress_every_s_with_a_slow_clock() -> None:
    """A clock that advances 10 s per reading: time, not the step count, triggers reports."""
    ticks = itertools.count()
    reports: list[ProgressInfo] = []
    train(
        _model("char_lstm"),
        TRAIN_IDS,
        EVAL_IDS,
        replace(BASE, max_steps=3, progress_every_s=5.0),
        Callbacks(on_progress=reports.append),
        clock=lambda: 10.0 * next(ticks),
    )
    assert [r.step for r in reports] == [1, 2, 3]
    tokens_per_step = BASE.batch_size * BASE.block_size
    assert reports[0].tokens_per_s == pytest.approx(tokens_per_step / 10.0)
    assert reports[0].elapsed_s == 10.0 and reports[0].eta_s == pytest.approx(20.0)
    assert reports[-1].eta_s == 0.0
    assert reports[-1].epoch == pytest.approx(3 * tokens_per_step / TRAIN_IDS.numel())


def test_gradient_accumulation_matches_one_big_batch() -> None:
    big = _run(_model("gpt2"), replace(BASE, batch_size=8, grad_accum_steps=1))
    accumulated = _run(_model("gpt2"), replace(BASE, batch_size=4, grad_accum_steps=2))
    assert accumulated.losses == pytest.approx(big.losses, abs=1e-5)


def test_training_without_a_holdout_skips_eval() -> None:
    result = train(_model("char_lstm"), TRAIN_IDS, None, replace(BASE, max_steps=2))
    assert result.eval_history == [] and result.final_step == 2


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"block_size": 256}, ErrorCode.CONFIG_INVALID),  # the tiny GPT-2 sees 128 positions
        ({"device": "cuda"}, ErrorCode.DEVICE_UNAVAILABLE),
        ({"device": "auto", "precision": "fp16"}, ErrorCode.CONFIG_INVALID),  # auto: no GPU here
    ],
)
def test_refused_configurations(
    change: dict[str, object], code: ErrorCode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = replace(BASE, **change)  # type: ignore[arg-type]  # parametrized field values
    with pytest.raises(AppError) as err:
        _run(_model("gpt2"), config)
    assert err.value.code is code


def test_refused_data() -> None:
    with pytest.raises(AppError) as short:
        train(_model("char_lstm"), TRAIN_IDS[:20], EVAL_IDS, BASE)
    assert short.value.code is ErrorCode.DATA_INVALID
    too_big = TRAIN_IDS.clone()
    too_big[5] = VOCAB  # an id the 256-way output layer cannot predict
    with pytest.raises(AppError) as vocab:
        train(_model("char_lstm"), too_big, EVAL_IDS, BASE)
    assert vocab.value.code is ErrorCode.DATA_INVALID
    with pytest.raises(AppError) as no_holdout:
        train(_model("char_lstm"), TRAIN_IDS, None, replace(BASE, early_stopping_patience=1))
    assert no_holdout.value.code is ErrorCode.CONFIG_INVALID


def test_a_checkpoint_between_evals_carries_no_eval_loss() -> None:
    """eval every 3 steps, checkpoints every 2: the step-2 and step-4 weights were never
    evaluated, so they carry no loss (retention must not rank them as best by an older one)."""
    config = replace(BASE, max_steps=6, eval_every=3, checkpoint_every=2)
    checkpoints: list[CheckpointInfo] = []
    _run(_model("char_lstm"), config, Callbacks(on_checkpoint=checkpoints.append))
    assert [(c.step, c.eval_loss is not None, c.is_best) for c in checkpoints] == [
        (2, False, False),
        (4, False, False),
        (6, True, True),
    ]


def test_bf16_on_the_cpu_trains_in_bf16_where_the_cpu_has_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """precision 'bf16' with device 'cpu': autocast to bf16 on a CPU with AMX or AVX512-BF16
    (the matmuls' outputs are bf16, the loss falls), CONFIG_INVALID naming the instructions
    on one without them (emulated bf16 is slower than fp32)."""
    config = replace(BASE, precision="bf16", max_steps=30, eval_every=15, warmup_steps=3)
    model = _model()
    seen: set[torch.dtype] = set()
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    if cpu_has_bf16():
        evals: list[EvalInfo] = []
        _run(model, config, Callbacks(on_eval=evals.append))
        assert torch.bfloat16 in seen  # fp32 throughout without autocast
        assert evals[-1].eval_loss < evals[0].eval_loss - 0.5
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)
    with pytest.raises(AppError, match="no bf16 instructions") as err:
        _run(_model(), config)
    assert err.value.code is ErrorCode.CONFIG_INVALID
