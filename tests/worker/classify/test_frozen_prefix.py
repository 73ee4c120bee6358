"""A classifier's frozen lower blocks as a fixed feature extractor (`FrozenPrefix`): the two
halves compute one forward's logits, the prefix ignores train mode (no dropout), the model's
state dict stays whole, and caching the prefix's states changes no result of a run, only how
often the prefix runs."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertForSequenceClassification,
    BertForTokenClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
)

from platform_core.specs import TrainConfig
from tests.worker.classify.tiny_bert import LABELS, padded_rows, tiny_bert, tiny_bert_config
from trainer_worker.classify import task as task_module
from trainer_worker.classify.task import ClassifierTask, TextBatch
from trainer_worker.models.encoder import FrozenPrefix, freeze_lower_layers
from trainer_worker.training.loop import train_task

WIDTH = 12


def _bert(layers: int = 3, seed: int = 0, dropout: float = 0.3) -> BertForSequenceClassification:
    """Dropout everywhere by default: train mode would differ from eval."""
    return tiny_bert(layers=layers, width=WIDTH, dropout=dropout, seed=seed)


def _texts(rows: int, seed: int) -> TextBatch:
    return padded_rows(rows, seed, width=WIDTH)


CONFIG = TrainConfig(
    block_size=WIDTH,
    batch_size=8,
    max_steps=12,
    learning_rate=3e-3,
    min_lr=3e-4,
    warmup_steps=2,
    eval_every=4,
    progress_every_steps=1000,
    device="cpu",
    seed=5,
)


def test_the_halves_compute_one_forward_and_leave_the_model_whole() -> None:
    model = _bert()
    freeze_lower_layers(model, 2)
    prefix = FrozenPrefix.of(model, 2)
    assert prefix is not None
    keys = list(model.state_dict())
    batch = _texts(6, seed=1)
    assert prefix.splits_exactly(batch.input_ids, batch.attention_mask)

    module: torch.nn.Module = model  # nn.Module's typed eval()
    module.eval()
    states = prefix.states(batch.input_ids, batch.attention_mask)
    assert states.shape == (6, WIDTH, 32)
    with prefix.upper():
        split = model(inputs_embeds=states, attention_mask=batch.attention_mask).logits
        assert len(model.bert.encoder.layer) == 1  # only the block above the prefix runs
        with pytest.raises(ValueError, match="inputs_embeds"):  # token ids skip no block
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    whole = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-6)
    assert list(model.state_dict()) == keys

    with pytest.raises(RuntimeError, match="boom"), prefix.upper():
        raise RuntimeError("boom")
    assert list(model.state_dict()) == keys  # restored after a failure inside too
    assert len(model.bert.encoder.layer) == 3


def _upper_loss(model: torch.nn.Module, prefix: FrozenPrefix, batch: TextBatch) -> torch.Tensor:
    states = prefix.states(batch.input_ids, batch.attention_mask)
    with prefix.upper():
        logits = model(inputs_embeds=states, attention_mask=batch.attention_mask).logits
    loss: torch.Tensor = torch.nn.functional.cross_entropy(logits, batch.labels)
    return loss


def test_the_top_block_computes_the_first_token_only_with_the_same_gradients() -> None:
    """A [CLS] head reads one position, so the top block runs its query, attention output
    and feed-forward on it alone: the loss and every trainable gradient are the whole
    block's (dropout off, so the two can be compared in train mode)."""
    model = _bert(layers=3, dropout=0.0)
    freeze_lower_layers(model, 1)
    prefix = FrozenPrefix.of(model, 1)
    assert prefix is not None and prefix.first_token
    batch = _texts(8, seed=3)
    assert prefix.splits_exactly(batch.input_ids, batch.attention_mask)
    assert prefix.first_token  # kept: the pooler reads position 0 only
    states = prefix.states(batch.input_ids, batch.attention_mask)
    with prefix.upper():
        top = model.bert(inputs_embeds=states, attention_mask=batch.attention_mask)
    assert top.last_hidden_state.shape == (8, 1, 32)  # the top block gave one position

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    gradients = []
    for first_token in (True, False):
        prefix.first_token = first_token
        model.zero_grad()
        loss = _upper_loss(model, prefix, batch)
        torch.autograd.backward([loss])
        gradients.append(
            (loss.detach(), {n: p.grad.clone() for n, p in trainable if p.grad is not None})
        )
    (fast_loss, fast), (whole_loss, whole) = gradients
    torch.testing.assert_close(fast_loss, whole_loss, rtol=1e-5, atol=1e-6)
    assert fast.keys() == whole.keys() and len(whole) == len(trainable)
    for name in whole:
        torch.testing.assert_close(fast[name], whole[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_head_that_reads_every_token_keeps_the_whole_top_block() -> None:
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(layers=3, width=WIDTH, dropout=0.3))
    freeze_lower_layers(model, 2)
    prefix = FrozenPrefix.of(model, 2)
    assert prefix is not None
    assert [prefix.first_token] == [True]  # laid out as BERT: tried first
    batch = _texts(6, seed=4)
    assert prefix.splits_exactly(batch.input_ids, batch.attention_mask)
    assert not prefix.first_token  # per-token logits: the first token alone is not enough
    states = prefix.states(batch.input_ids, batch.attention_mask)
    with prefix.upper():
        logits = model(inputs_embeds=states, attention_mask=batch.attention_mask).logits
    assert logits.shape == (6, WIDTH, len(LABELS))


def test_the_prefix_runs_in_eval_mode_while_the_model_trains() -> None:
    model = _bert()
    prefix = FrozenPrefix.of(model, 2)
    assert prefix is not None
    batch = _texts(4, seed=2)
    model.train()
    first = prefix.states(batch.input_ids, batch.attention_mask)
    second = prefix.states(batch.input_ids, batch.attention_mask)
    assert torch.equal(first, second)  # no dropout
    assert model.training and all(m.training for m in model.modules())
    assert not first.requires_grad


def test_no_prefix_without_frozen_blocks_or_an_encoder_stack() -> None:
    assert FrozenPrefix.of(_bert(), 0) is None
    assert FrozenPrefix.of(_bert(layers=2), 3) is None
    config = GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=16)
    config.num_labels = 3
    gpt2 = GPT2ForSequenceClassification(config)
    assert FrozenPrefix.of(gpt2, 1) is None  # no <base>.embeddings / encoder.layer


def _train(
    monkeypatch: pytest.MonkeyPatch, *, cache_bytes: int, frozen: int = 2
) -> tuple[ClassifierTask, dict[str, torch.Tensor], int]:
    """A seeded run of `frozen` frozen blocks: its task, final weights, and how many
    times the prefix ran."""
    monkeypatch.setattr(task_module, "PREFIX_CACHE_BYTES", cache_bytes)
    calls = 0
    original = FrozenPrefix.states

    def counted(self: FrozenPrefix, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return original(self, input_ids, mask)

    monkeypatch.setattr(FrozenPrefix, "states", counted)
    model = _bert(seed=3)
    freeze_lower_layers(model, frozen)
    task = ClassifierTask(
        train=_texts(40, seed=4),
        val=_texts(16, seed=6),
        labels=LABELS,
        source=model,
        frozen_layers=frozen,
    )
    train_task(model, task, CONFIG)
    return task, {k: v.clone() for k, v in model.state_dict().items()}, calls


def test_caching_the_prefix_changes_no_result_only_how_often_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cached_task, cached, cached_calls = _train(monkeypatch, cache_bytes=1 << 30)
    live_task, live, live_calls = _train(monkeypatch, cache_bytes=0)

    assert cached_task.train.states is not None and cached_task.val.states is not None
    assert live_task.train.states is None  # over the budget: computed per drawn batch
    # cached: the probe's 2 calls and one per 64 texts of train and val; live: also one a step
    assert cached_calls == 2 + 1 + 1
    assert live_calls == 2 + 12
    assert cached_task.best_accuracy == live_task.best_accuracy
    for name, value in cached.items():
        torch.testing.assert_close(value, live[name], rtol=1e-5, atol=1e-6, msg=name)


def test_the_frozen_blocks_keep_their_weights_and_the_rest_trains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = _bert(seed=3).state_dict()
    _, after, _ = _train(monkeypatch, cache_bytes=1 << 30)
    for name, value in before.items():
        frozen = name.startswith(
            ("bert.embeddings.", "bert.encoder.layer.0.", "bert.encoder.layer.1.")
        )
        if frozen:
            assert torch.equal(after[name], value), name
        elif name.endswith("weight") and "LayerNorm" not in name:
            assert not torch.equal(after[name], value), name


def test_a_model_that_does_not_split_trains_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FrozenPrefix, "splits_exactly", lambda *_: False)
    task, _, calls = _train(monkeypatch, cache_bytes=1 << 30)
    assert task.prefix is None and task.train.states is None
    assert calls == 0
    assert task.best_accuracy is not None
