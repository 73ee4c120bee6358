"""How the classifier's task cuts padding: training batches drawn from one length bucket and
cut to their longest row, evaluation over chunks of similar lengths; neither changes a
logit, and probabilities come back in the rows' order."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from transformers import BertForSequenceClassification

from platform_core.specs import TrainConfig
from tests.worker.classify.tiny_bert import LABELS, padded_rows, tiny_bert
from trainer_worker.classify.task import (
    EVAL_BATCH,
    ClassifierTask,
    TextBatch,
    batch_logits,
    predict_probs,
)
from trainer_worker.models.encoder import FrozenPrefix, freeze_lower_layers
from trainer_worker.training.device import resolve_device_setup
from trainer_worker.training.distributed import DistContext

CPU = torch.device("cpu")
WIDTH = 24


def _bert() -> BertForSequenceClassification:
    return tiny_bert(width=WIDTH, dropout=0.1)


def _rows(count: int, seed: int, longest: int = WIDTH) -> TextBatch:
    return padded_rows(count, seed, width=WIDTH, shortest=2, longest=longest)


def test_cutting_the_padding_columns_changes_no_logit() -> None:
    model = _bert()
    module: torch.nn.Module = model
    module.eval()
    rows = _rows(10, seed=1, longest=9)
    cut = rows.trimmed()
    assert cut.input_ids.shape == (10, int(rows.attention_mask.sum(dim=1).max()))
    assert cut.input_ids.size(1) <= 9
    with torch.no_grad():
        whole = batch_logits(model, rows, None)
        trimmed = batch_logits(model, cut, None)
    torch.testing.assert_close(trimmed, whole, rtol=1e-5, atol=1e-6)

    freeze_lower_layers(model, 1)  # and through the frozen prefix's cached states
    prefix = FrozenPrefix.of(model, 1)
    assert prefix is not None
    states = prefix.states(rows.input_ids, rows.attention_mask)
    with_states = TextBatch(rows.input_ids, rows.attention_mask, rows.labels, states)
    assert with_states.trimmed().states is not None
    with torch.no_grad():
        split = batch_logits(model, with_states.trimmed(), prefix)
    torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-5)
    full = _rows(3, seed=2)
    full = TextBatch(full.input_ids, torch.ones_like(full.attention_mask), full.labels)
    assert full.trimmed() is full  # nothing to cut


def test_probabilities_come_back_in_the_rows_order() -> None:
    """Evaluation runs chunks sorted by length; each row's probabilities are still its own
    (here: the same as scoring it alone, unpadded)."""
    model = _bert()
    rows = _rows(2 * EVAL_BATCH + 7, seed=3)
    probs, loss = predict_probs(model, rows, CPU, nullcontext)
    assert probs.shape == (len(rows), len(LABELS))
    module: torch.nn.Module = model
    module.eval()
    alone = []
    with torch.no_grad():
        for i in range(len(rows)):
            n = int(rows.attention_mask[i].sum())
            out = model(input_ids=rows.input_ids[i : i + 1, :n])
            alone.append(out.logits.softmax(dim=-1)[0])
    torch.testing.assert_close(probs, torch.stack(alone), rtol=1e-4, atol=1e-5)
    expected = torch.nn.functional.nll_loss(torch.stack(alone).log(), rows.labels)
    assert abs(loss - float(expected)) < 1e-4


def test_a_training_batch_comes_from_one_length_bucket_cut_to_its_longest_row() -> None:
    model = _bert()
    train = _rows(640, seed=4)
    task = ClassifierTask(train=train, val=_rows(8, seed=5), labels=LABELS, source=model)
    config = TrainConfig(block_size=WIDTH, batch_size=16, device="cpu")
    task.prepare(model, config, setup=resolve_device_setup("cpu", "fp32"), ctx=DistContext(CPU))
    assert task.buckets is not None
    lengths = train.attention_mask.sum(dim=1)
    generator = torch.Generator().manual_seed(6)
    widths = []
    for _ in range(40):
        batch = task.get_batch(config, generator, CPU, DistContext(CPU))
        assert len(batch) == 16
        widths.append(batch.input_ids.size(1))
        assert batch.input_ids.size(1) == int(batch.attention_mask.sum(dim=1).max())
    assert sum(widths) / len(widths) < 0.8 * WIDTH  # most of the padding is gone
    spread = [int(lengths[g].max() - lengths[g].min()) for g in task.buckets.groups]
    assert max(spread) < WIDTH // 2  # each bucket's rows have similar lengths
