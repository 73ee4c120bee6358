"""A tiny BERT classifier built from a config and the padded rows it trains on: what the
tests of the frozen prefix, the length-cut batches and DDP share."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification

from trainer_worker.classify.task import TextBatch

LABELS = ["a", "b", "c"]
VOCAB = 50


def tiny_bert_config(*, layers: int, width: int, dropout: float) -> BertConfig:
    """3 labels, 32 wide, 2 heads; `dropout` on the hidden states and the attention."""
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=width,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    config.num_labels = len(LABELS)
    return config


def tiny_bert(
    *, layers: int = 3, width: int, dropout: float, seed: int = 0
) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(
        tiny_bert_config(layers=layers, width=width, dropout=dropout)
    )


def padded_rows(
    count: int, seed: int, *, width: int, shortest: int = 3, longest: int | None = None
) -> TextBatch:
    """Right-padded rows of `shortest`..`longest` (default `width`) tokens, as a tokenizer
    pads them to `width` (so the attention mask matters), labelled by the sum of their
    first three ids (learnable)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (count, width), generator=generator)
    lengths = torch.randint(shortest, (longest or width) + 1, (count,), generator=generator)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return TextBatch(ids * mask, mask, ids[:, :3].sum(dim=1) % len(LABELS))
