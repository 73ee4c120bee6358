"""A small pretrained BERT for the encoder families' tests: built from a config, saved with
its own WordPiece tokenizer in a `data:` folder under the data root (no network), the way
a hub snapshot or the MiniLM package lays out its files."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from platform_core.json_types import JsonObject
from trainer_worker.dual_agent.tokenizer import train_wordpiece

FOLDER = "models/small-bert"
PRETRAINED = f"data:{FOLDER}"
# a vocabulary of another size than any run's own WordPiece (the tests' specs ask for 1000+)
VOCAB_SIZE = 400


def save_small_bert(data_root: Path, texts: list[str], seed: int = 0) -> PreTrainedTokenizerFast:
    """A 2-layer BERT (width 32, 64 positions) and its tokenizer (a WordPiece over `texts`,
    the encoder's "pretraining" data) in `data_root/FOLDER`."""
    folder = data_root / FOLDER
    tokenizer = train_wordpiece(texts, VOCAB_SIZE, folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertModel(config).save_pretrained(folder)  # with its pooler, as BERT checkpoints ship
    return tokenizer


def with_pretrained(spec: JsonObject) -> JsonObject:
    """`spec` with the small BERT as its model (no dropout override: a pretrained model keeps
    its own)."""
    model = spec["model"]
    assert isinstance(model, dict)
    return {**spec, "model": {"family": model["family"], "pretrained": PRETRAINED}}
