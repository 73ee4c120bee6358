"""`train.head_lr_scale`: the parameters outside a model's base model (a classifier's new
head, the dual-agent model's two heads) learn at the scheduled rate times the scale, the
encoder at the scheduled rate; a model with no separate head refuses a scale other than 1."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import BertModel

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import TrainConfig
from tests.worker.classify.tiny_bert import LABELS, padded_rows, tiny_bert, tiny_bert_config
from trainer_worker.classify.task import ClassifierTask
from trainer_worker.dual_agent.model import DualAgentModel
from trainer_worker.models.gpt2 import GPT2_PRESETS, build_gpt2
from trainer_worker.training.loop import set_lr, train_task
from trainer_worker.training.prepare import configure_optimizer, head_parameters

CPU = torch.device("cpu")
WIDTH = 16


def _names(model: nn.Module, params: list[nn.Parameter]) -> set[str]:
    ids = {id(p) for p in params}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_a_classifiers_head_is_its_new_layer_and_learns_at_the_scaled_rate() -> None:
    model = tiny_bert(width=WIDTH, dropout=0.0)
    assert _names(model, head_parameters(model)) == {"classifier.weight", "classifier.bias"}
    optimizer = configure_optimizer(model, TrainConfig(head_lr_scale=5.0), CPU)
    scales = {
        name: group["lr_scale"]
        for group in optimizer.param_groups
        for name in _names(model, group["params"])
    }
    assert scales["classifier.weight"] == scales["classifier.bias"] == 5.0
    assert scales["bert.pooler.dense.weight"] == 1.0  # pretrained, so part of the encoder
    assert set(scales) == {name for name, _ in model.named_parameters()}
    decayed = {
        n for g in optimizer.param_groups if g["weight_decay"] for n in _names(model, g["params"])
    }
    assert "classifier.weight" in decayed and "classifier.bias" not in decayed


def test_one_rate_for_all_keeps_two_groups() -> None:
    model = tiny_bert(width=WIDTH, dropout=0.0)
    optimizer = configure_optimizer(model, TrainConfig(), CPU)
    assert len(optimizer.param_groups) == 2
    assert {g["lr_scale"] for g in optimizer.param_groups} == {1.0}


@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_the_first_step_moves_the_head_scale_times_as_far_as_the_encoder(scale: float) -> None:
    """Adam's first update of a weight is lr x sign(gradient): the largest change of a head
    weight is the head's rate, of an encoder weight the scheduled rate."""
    model = tiny_bert(width=WIDTH, dropout=0.0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    task = ClassifierTask(
        train=padded_rows(64, seed=1, width=WIDTH),
        val=padded_rows(16, seed=2, width=WIDTH),
        labels=LABELS,
        source=model,
    )
    lr = 1e-3
    config = TrainConfig(
        block_size=WIDTH,
        batch_size=16,
        max_steps=1,
        learning_rate=lr,
        min_lr=lr,
        warmup_steps=0,
        weight_decay=0.0,
        head_lr_scale=scale,
        checkpoint_every=None,
        device="cpu",
    )
    train_task(model, task, config)
    moved = {
        name: float((p.detach() - before[name]).abs().max()) for name, p in model.named_parameters()
    }
    assert moved["classifier.weight"] == pytest.approx(lr * scale, rel=1e-3)
    assert moved["classifier.bias"] == pytest.approx(lr * scale, rel=1e-3)
    assert moved["bert.encoder.layer.2.output.dense.weight"] == pytest.approx(lr, rel=1e-3)
    assert moved["bert.pooler.dense.weight"] == pytest.approx(lr, rel=1e-3)


def test_the_dual_agent_models_heads_are_its_head() -> None:
    encoder = BertModel(tiny_bert_config(layers=2, width=WIDTH, dropout=0.0))
    model = DualAgentModel(encoder, "sigmoid")
    names = _names(model, head_parameters(model))
    assert names == {
        f"heads.{h}.{p}"
        for h in ("criteria_matcher", "evidence_binder")
        for p in ("weight", "bias")
    }
    groups = configure_optimizer(model, TrainConfig(head_lr_scale=10.0), CPU).param_groups
    assert sum(len(g["params"]) for g in groups if g["lr_scale"] == 10.0) == 4


@pytest.mark.parametrize(
    "model",
    [build_gpt2(GPT2_PRESETS["tiny"], 300, None), nn.Linear(4, 2)],
    ids=["gpt2-tied-head", "no-base-model"],
)
def test_a_model_without_a_separate_head_refuses_a_head_rate(model: nn.Module) -> None:
    assert head_parameters(model) == []
    configure_optimizer(model, TrainConfig(), CPU)  # one rate for all: fine
    with pytest.raises(AppError, match=r"head_lr_scale 2\.0 needs") as caught:
        configure_optimizer(model, TrainConfig(head_lr_scale=2.0), CPU)
    assert caught.value.code is ErrorCode.CONFIG_INVALID


def test_a_head_rate_with_a_frozen_encoder_is_refused_too() -> None:
    """Nothing trainable in the base model: the scale could only mean one rate."""
    model = tiny_bert(width=WIDTH, dropout=0.0)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("classifier")
    with pytest.raises(AppError, match="has 0 and 2"):
        configure_optimizer(model, TrainConfig(head_lr_scale=3.0), CPU)


def test_a_checkpoint_from_before_head_rates_resumes_at_one_rate() -> None:
    """An optimizer state saved without `lr_scale` (older checkpoints) loads, and every
    group then runs at the scheduled rate."""
    model = tiny_bert(width=WIDTH, dropout=0.0)
    optimizer = configure_optimizer(model, TrainConfig(), CPU)
    saved = optimizer.state_dict()
    for group in saved["param_groups"]:
        del group["lr_scale"]
    resumed = configure_optimizer(model, TrainConfig(), CPU)
    resumed.load_state_dict(saved)
    assert set_lr(resumed, 2e-3) == 2e-3
    assert [g["lr"] for g in resumed.param_groups] == [2e-3, 2e-3]
