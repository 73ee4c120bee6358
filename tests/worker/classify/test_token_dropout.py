"""`classifier.token_dropout`: training batches hide tokens from attention at the rate,
never [CLS] and never a padding token that was not there; evaluation sees every token; a
resumed run hides the same tokens as the uninterrupted one."""

from __future__ import annotations

import io
import math
from contextlib import nullcontext
from dataclasses import replace

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from platform_core.specs import ClassifierOptions, TrainConfig
from tests.worker.classify.test_frozen_prefix import CONFIG
from tests.worker.classify.tiny_bert import LABELS, padded_rows, tiny_bert
from trainer_worker.classify.task import ClassifierTask, hide_tokens
from trainer_worker.training.callbacks import Callbacks, CheckpointInfo, TrainResult
from trainer_worker.training.device import resolve_device_setup
from trainer_worker.training.distributed import DistContext
from trainer_worker.training.loop import train_task
from trainer_worker.training.state import TrainState

CPU = torch.device("cpu")
WIDTH = 24


def _task(model: nn.Module, rate: float, frozen: int = 0) -> ClassifierTask:
    return ClassifierTask(
        train=padded_rows(96, seed=1, width=WIDTH),
        val=padded_rows(32, seed=2, width=WIDTH),
        labels=LABELS,
        source=model,
        frozen_layers=frozen,
        token_dropout=rate,
    )


def test_tokens_are_hidden_at_the_rate_but_never_cls_or_beyond_the_text() -> None:
    rows = padded_rows(2000, seed=3, width=WIDTH)
    assert hide_tokens(rows, 0.0) is rows
    torch.manual_seed(0)
    hidden = hide_tokens(rows, 0.3)
    before, after = rows.attention_mask, hidden.attention_mask
    assert torch.equal(hidden.input_ids, rows.input_ids)
    assert torch.equal(after[:, 0], before[:, 0])  # [CLS] always seen
    assert not (after > before).any()  # padding stays padding
    real = before[:, 1:].sum()
    rate = 1 - float(after[:, 1:].sum() / real)
    assert abs(rate - 0.3) < 0.01, rate  # ~40 000 tokens: the rate to within 1 point


def test_training_batches_hide_tokens_and_evaluation_sees_them_all() -> None:
    """Through the cached frozen prefix: the batch is the same rows, with fewer tokens
    seen; evaluation with and without the setting gives the same figures."""
    config = TrainConfig(block_size=WIDTH, batch_size=32, device="cpu")
    setup, ctx = resolve_device_setup("cpu", "fp32"), DistContext(CPU)
    model = tiny_bert(width=WIDTH, dropout=0.0)
    plain, hiding = _task(model, 0.0, frozen=1), _task(model, 0.5, frozen=1)
    for task in (plain, hiding):
        task.prepare(model, config, setup=setup, ctx=ctx)
        assert task.prefix is not None and task.train.states is not None
    a = plain.get_batch(config, torch.Generator().manual_seed(4), CPU, ctx)
    b = hiding.get_batch(config, torch.Generator().manual_seed(4), CPU, ctx)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    assert b.states is not None and a.states is not None and torch.equal(a.states, b.states)
    assert int(b.attention_mask.sum()) < int(a.attention_mask.sum())
    seen = plain.evaluate(model, CPU, nullcontext, ctx)
    assert hiding.evaluate(model, CPU, nullcontext, ctx).metrics == seen.metrics


def _train(
    rate: float, checkpoints: Callbacks | None = None, resume: bytes | None = None
) -> tuple[nn.Module, TrainResult]:
    """Eight steps of the frozen-prefix tests' tiny BERT, a checkpoint every 4."""
    model = tiny_bert(width=WIDTH, dropout=0.1)
    state = None
    if resume is not None:
        saved = torch.load(io.BytesIO(resume), weights_only=True)
        model.load_state_dict(saved["model"])
        state = TrainState.from_state_dict(saved["train"])
    config = replace(CONFIG, block_size=WIDTH, batch_size=16, max_steps=8, checkpoint_every=4)
    result = train_task(model, _task(model, rate), config, checkpoints, resume_from=state)
    return model, result


def test_a_resumed_run_hides_the_same_tokens_as_the_uninterrupted_one() -> None:
    saved: dict[int, bytes] = {}

    def save(info: CheckpointInfo) -> None:
        buffer = io.BytesIO()
        torch.save({"model": info.model.state_dict(), "train": info.state.state_dict()}, buffer)
        saved[info.step] = buffer.getvalue()

    full_model, full = _train(0.3, Callbacks(on_checkpoint=save))
    _, plain = _train(0.0)
    assert full.losses != pytest.approx(plain.losses, abs=1e-6)  # hiding changed the training
    resumed_model, resumed = _train(0.3, resume=saved[4])
    assert resumed.losses == pytest.approx(full.losses[4:], abs=1e-6)
    for a, b in zip(full_model.parameters(), resumed_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_the_highest_rate_trains_on_cls_alone() -> None:
    """The schema's extreme (just under 1): nearly every token hidden; the loss stays finite."""
    _, result = _train(math.nextafter(1.0, 0.0))
    assert result.final_step == 8 and all(math.isfinite(loss) for loss in result.losses)


@pytest.mark.parametrize("rate", [-0.1, 1.0, math.nan, math.inf, "0.1", True])
def test_a_rate_outside_0_to_1_is_refused(rate: object) -> None:
    with pytest.raises(ValidationError) as err:
        ClassifierOptions.model_validate({"dataset_id": "d", "token_dropout": rate})
    assert [e["loc"] for e in err.value.errors()] == [("token_dropout",)]


def test_whole_numbers_and_the_bounds_are_accepted() -> None:
    for rate in (0, 0.0, 0.5, math.nextafter(1.0, 0.0)):
        options = ClassifierOptions.model_validate({"dataset_id": "d", "token_dropout": rate})
        assert options.token_dropout == rate
