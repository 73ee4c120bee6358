"""One entry point that turns a `ModelSpec` into a model with the forward contract.

Every model the engine builds maps (B, T) long ids to (B, T, V) logits; the training loop,
evaluation, generation and scoring rely on nothing else, plus an optional `context_size`
(the longest input the model accepts; None when unlimited).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from platform_core.errors import AppError, ErrorCode
from platform_core.paths import resolve_inside
from platform_core.specs import ModelSpec
from trainer_worker.models.char_lstm import CHAR_LSTM_PRESETS, build_char_lstm
from trainer_worker.models.gpt2 import GPT2_PRESETS, build_gpt2, load_gpt2


def build_model(
    spec: ModelSpec, vocab_size: int, eos_id: int | None, *, cache_dir: Path | None = None
) -> nn.Module:
    """Build (or load, for `pretrained`) the model `spec` names over a tokenizer's vocabulary.

    `spec.pretrained` is used as given: callers resolve user paths inside the data root first.
    """
    if spec.family == "char_lstm":
        return build_char_lstm(CHAR_LSTM_PRESETS[spec.preset], vocab_size, spec.dropout)
    if spec.pretrained is not None:
        return load_gpt2(spec.pretrained, vocab_size, eos_id, cache_dir=cache_dir)
    gpt2_spec = GPT2_PRESETS[spec.preset]
    if spec.dropout is not None:
        gpt2_spec = replace(gpt2_spec, dropout=spec.dropout)
    if spec.context_size is not None:
        gpt2_spec = replace(gpt2_spec, n_positions=spec.context_size)
    return build_gpt2(gpt2_spec, vocab_size, eos_id)


def resolve_pretrained(spec: ModelSpec, data_root: Path) -> ModelSpec:
    """`data:<folder>` becomes that folder's absolute path inside the data root (a link out
    of the root is PATH_OUTSIDE_DATA_ROOT); a hub id stays a hub id, which the loader fetches
    into its cache and never reads as a path relative to the working directory."""
    folder = spec.pretrained_folder
    if folder is None:
        return spec
    # model_copy skips validation on purpose: the resolved absolute path is worker-internal
    return spec.model_copy(update={"pretrained": str(resolve_inside(data_root, folder))})


def context_size(model: nn.Module) -> int | None:
    """Longest input `model` accepts, looking through DDP / torch.compile wrappers."""
    inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
    if isinstance(inner, nn.Module):
        return context_size(inner)
    size = getattr(model, "context_size", None)
    return size if isinstance(size, int) else None


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's weights (the first parameter's; models here use one)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters; `parameters()` already yields tied embeddings once."""
    return sum(p.numel() for p in model.parameters())


def require_vocab(model_vocab: int, max_id: int) -> None:
    """Refuse token ids the model's output layer cannot represent."""
    if max_id >= model_vocab:
        raise AppError(
            ErrorCode.DATA_INVALID,
            f"token id {max_id} is outside the model's vocabulary of {model_vocab}; "
            "was the model built with a different tokenizer?",
        )
