"""A tiny transformers sequence classifier built from a config (no download), saved where a
run saves its model, for the registry's tests."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

from platform_core.layout import DataLayout


def save_tiny_classifier(
    data_root: Path, run_id: str, *, seed: int = 0, labels: tuple[str, ...] = ("a", "b")
) -> BertForSequenceClassification:
    """A 1-layer BERT classifier over `labels`, saved in `runs/<run_id>/model/`."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    config.id2label = dict(enumerate(labels))  # sets num_labels
    config.label2id = {label: i for i, label in enumerate(labels)}
    model = BertForSequenceClassification(config)
    model.train(False)  # eval mode (no dropout)
    model.save_pretrained(DataLayout(data_root).model_dir(run_id))
    return model
