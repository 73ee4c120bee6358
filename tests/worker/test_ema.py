"""`train.ema_decay`: the moving average of the weights is what evaluations, checkpoints and
the final model hold, while training goes on from the live weights undisturbed."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

from platform_core.errors import AppError, ErrorCode
from tests.worker.test_training_loop import BASE, EVAL_IDS, TRAIN_IDS, _model
from trainer_worker.training.callbacks import Callbacks, CheckpointInfo, TrainResult
from trainer_worker.training.distributed import DistContext
from trainer_worker.training.ema import WeightAverage, load_live_weights
from trainer_worker.training.evaluate import AutocastFactory
from trainer_worker.training.lm_task import LanguageModelTask, LMBatch
from trainer_worker.training.loop import train_task
from trainer_worker.training.state import TrainState
from trainer_worker.training.task import TaskEval

Weights = dict[str, Tensor]


def _weights(model: nn.Module) -> Weights:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class _RecordingTask(LanguageModelTask):
    """The language-model task, noting the trainable weights at the start of every step
    (the live weights after the previous update) and at every evaluation."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(TRAIN_IDS, EVAL_IDS)
        self.model = model
        self.at_step: list[Weights] = []
        self.at_eval: list[Weights] = []

    def get_batch(
        self, config: object, generator: torch.Generator, device: torch.device, ctx: DistContext
    ) -> LMBatch:
        self.at_step.append(_weights(self.model))
        return super().get_batch(config, generator, device, ctx)  # type: ignore[arg-type]  # the loop passes its TrainConfig

    def evaluate(
        self, model: nn.Module, device: torch.device, autocast: AutocastFactory, ctx: DistContext
    ) -> TaskEval:
        self.at_eval.append(_weights(self.model))
        return super().evaluate(model, device, autocast, ctx)


def _train(
    decay: float | None, checkpoints: list[CheckpointInfo] | None = None
) -> tuple[nn.Module, _RecordingTask, TrainResult, list[Weights], list[Weights]]:
    """Six steps of tiny GPT-2 with evals and checkpoints every 3; the checkpoints' model
    weights and live weights, copied as the callback sees them."""
    model = _model(dropout=0.1)
    task = _RecordingTask(model)
    saved: list[Weights] = []
    live: list[Weights] = []

    def save(info: CheckpointInfo) -> None:
        saved.append(_weights(info.model))
        if info.state.live_weights is not None:
            live.append({n: t.clone() for n, t in info.state.live_weights.items()})
        if checkpoints is not None:
            checkpoints.append(info)

    config = replace(BASE, max_steps=6, eval_every=3, checkpoint_every=3, ema_decay=decay)
    result = train_task(model, task, config, Callbacks(on_checkpoint=save))
    return model, task, result, saved, live


def _assert_equal(a: Weights, b: Weights) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_evals_checkpoints_and_the_final_model_hold_the_average() -> None:
    decay = 0.3  # the warm-up (2/11, 3/12) decides steps 1-2, the decay steps 3-6
    model, task, result, saved, live = _train(decay)
    # the live weights after each update: the next step's start, then the final checkpoint's
    steps = [*task.at_step[1:], live[-1]]
    assert len(steps) == 6
    average = task.at_step[0]  # the initial weights
    expected: dict[int, Weights] = {0: average}
    for step, weights in enumerate(steps, start=1):
        d = min(decay, (1 + step) / (10 + step))
        average = {n: average[n] + (1 - d) * (weights[n] - average[n]) for n in average}
        expected[step] = average
    assert [e.step for e in result.eval_history] == [0, 3, 6]
    for seen, step in zip(task.at_eval, [0, 3, 6], strict=True):
        for name, tensor in seen.items():
            torch.testing.assert_close(tensor, expected[step][name], rtol=1e-5, atol=1e-6)
    assert len(saved) == len(live) == 2  # steps 3 and 6
    for got, step in zip(saved, [3, 6], strict=True):
        for name, tensor in got.items():
            torch.testing.assert_close(tensor, expected[step][name], rtol=1e-5, atol=1e-6)
    _assert_equal(live[0], task.at_step[3])  # the live weights after step 3, exactly
    final = _weights(model)
    for name, tensor in final.items():
        torch.testing.assert_close(tensor, expected[6][name], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(final[n], live[-1][n]) for n in final)  # not the live ones


def test_averaging_leaves_the_training_itself_unchanged() -> None:
    """The live weights take the same path with and without an average, and a run without
    one saves no live weights."""
    _, plain_task, plain, plain_saved, plain_live = _train(None)
    _, averaged_task, averaged, _, _ = _train(0.9)
    assert plain_live == []
    assert averaged.losses == plain.losses
    for a, b in zip(plain_task.at_step, averaged_task.at_step, strict=True):
        _assert_equal(a, b)
    _assert_equal(plain_task.at_eval[1], plain_saved[0])
    assert plain.eval_history[1].eval_loss != averaged.eval_history[1].eval_loss


def test_the_update_moves_toward_the_live_weights_and_swapping_restores_them() -> None:
    model = nn.Linear(2, 1)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    model.bias.requires_grad_(False)  # frozen: not averaged
    average = WeightAverage(model, 0.5)
    assert average.names == ["weight"]
    assert average.decay_at(1) == pytest.approx(2 / 11) and average.decay_at(100) == 0.5
    with torch.no_grad():
        model.weight.fill_(1.0)
    average.update(100)  # decay 0.5: halfway
    with average.swapped():
        assert model.weight.tolist() == [[0.5, 0.5]]
    assert model.weight.tolist() == [[1.0, 1.0]]
    assert average.live_weights()["weight"].tolist() == [[1.0, 1.0]]
    average.apply()
    assert model.weight.tolist() == [[0.5, 0.5]]


def test_a_swap_restores_the_live_weights_when_the_body_raises() -> None:
    model = nn.Linear(2, 1)
    before = _weights(model)
    average = WeightAverage(model, 0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    changed = _weights(model)
    with pytest.raises(RuntimeError), average.swapped():
        _assert_equal(_weights(model), before)
        raise RuntimeError("evaluation failed")
    _assert_equal(_weights(model), changed)


def test_live_weights_that_do_not_fit_the_model_are_a_corrupt_checkpoint() -> None:
    model = nn.Linear(2, 1)
    good = _weights(model)
    load_live_weights(model, {n: t + 1 for n, t in good.items()})
    torch.testing.assert_close(model.bias.detach(), good["bias"] + 1)
    for bad in (
        {"weight": good["weight"]},  # one missing
        {**good, "other": good["bias"]},  # one unknown
        {**good, "weight": torch.zeros(3, 3)},  # a shape that differs
    ):
        with pytest.raises(AppError) as caught:
            load_live_weights(model, bad)
        assert caught.value.code is ErrorCode.CHECKPOINT_CORRUPT


def test_training_state_keeps_live_weights_and_reads_older_states_without_them() -> None:
    checkpoints: list[CheckpointInfo] = []
    _train(0.9, checkpoints)
    state = checkpoints[0].state.state_dict()
    restored = TrainState.from_state_dict(state)
    assert restored.live_weights is not None
    assert restored.live_weights.keys() == checkpoints[0].state.live_weights.keys()  # type: ignore[union-attr]  # asserted by the checkpoint test above
    older = {k: v for k, v in state.items() if k != "live_weights"}
    assert TrainState.from_state_dict(older).live_weights is None
    for malformed in ([1.0], {"weight": [1.0]}):
        with pytest.raises(AppError) as caught:
            TrainState.from_state_dict({**state, "live_weights": malformed})
        assert caught.value.code is ErrorCode.CHECKPOINT_CORRUPT


def test_the_smallest_decay_averages_nothing() -> None:
    """The schema's extreme (just above 0): the average is the live weights, exactly."""
    plain_model, _, plain, _, _ = _train(None)
    model, _, result, _, live = _train(5e-324)
    assert [e.eval_loss for e in result.eval_history] == [e.eval_loss for e in plain.eval_history]
    _assert_equal(_weights(model), _weights(plain_model))
    _assert_equal(live[-1], _weights(plain_model))
