"""A tiny transformers sequence classifier built from a config (no download), saved where a
run saves its model, for the registry's tests."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

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


WORDS = ("alpha", "beta", "gamma", "delta", "bucket", "instance", "queue", "table")


def save_servable_classifier(
    data_root: Path, run_id: str, *, seed: int = 0, labels: tuple[str, ...] = ("a", "b")
) -> None:
    """`save_tiny_classifier` with a fast word-level tokenizer beside it (what a classifier
    run saves), so that the folder serves predictions as a registered version."""
    model = save_tiny_classifier(data_root, run_id, seed=seed, labels=labels)
    vocab = {word: i for i, word in enumerate(("[PAD]", "[UNK]", *WORDS))}
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # untyped in transformers
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        model_max_length=model.config.max_position_embeddings,
    )
    tokenizer.save_pretrained(DataLayout(data_root).model_dir(run_id))
