"""The BERT-like encoder of the dual-agent and classifier families (issues #12 and #14).

Either built from a preset and trained from scratch (with the family's own WordPiece), or
loaded pretrained from a local folder: a `data:` folder under the data root, a hub id's
snapshot in the local cache (`fetch_pretrained`: cache first, bounded retries, an offline
error that says how to fetch it by hand), or a packaged model such as the `minilm` extra's
MiniLM. A pretrained encoder always comes with its folder's own tokenizer (the families'
runs load it from the same folder).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoModel, AutoModelForSequenceClassification, BertConfig, PreTrainedModel

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import PACKAGED_MODELS


@dataclass(frozen=True)
class EncoderPreset:
    """A small BERT trained from scratch (nanoGPT-style config: one default per field)."""

    hidden_size: int = 64  # width of every token state
    num_layers: int = 2  # transformer blocks
    num_heads: int = 2  # attention heads (hidden_size / num_heads per head)
    intermediate_size: int = 128  # feed-forward width
    max_positions: int = 128  # longest input, tokens ([CLS] and [SEP] included)
    dropout: float = 0.1  # hidden and attention dropout


# platform_core.specs.PRESET_SHAPES["dual_agent"] and ["classifier"] mirror these (tests keep
# them equal)
ENCODER_PRESETS = {
    "tiny": EncoderPreset(),
    "small": EncoderPreset(
        hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, max_positions=256
    ),
}


def encoder_config(
    preset: EncoderPreset,
    vocab_size: int,
    pad_id: int,
    *,
    dropout: float | None = None,
    max_positions: int | None = None,
) -> BertConfig:
    """The BERT config of `preset` over a tokenizer's vocabulary; `dropout` and
    `max_positions` override the preset's (a spec's `dropout` and `context_size`)."""
    rate = preset.dropout if dropout is None else dropout
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=preset.hidden_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        intermediate_size=preset.intermediate_size,
        max_position_embeddings=max_positions or preset.max_positions,
        hidden_dropout_prob=rate,
        attention_probs_dropout_prob=rate,
        pad_token_id=pad_id,
    )


def load_pretrained(
    auto_class: type[AutoModel] | type[AutoModelForSequenceClassification],
    folder: Path,
    **options: object,
) -> PreTrainedModel:
    """`auto_class.from_pretrained` on a local folder (never the network: `fetch_pretrained`
    already placed a hub model's files there); a folder that holds no such model is
    MODEL_NOT_FOUND, naming what is wrong without the server's paths."""
    try:
        # from_pretrained is untyped in transformers; both auto classes build a PreTrainedModel
        model: PreTrainedModel = auto_class.from_pretrained(
            str(folder), local_files_only=True, **options
        )
    except (OSError, ValueError) as exc:
        raise AppError(
            ErrorCode.MODEL_NOT_FOUND,
            f"pretrained folder {folder.name!r} holds no model {auto_class.__name__} can load "
            f"({type(exc).__name__}: no config.json or weights, or an architecture without "
            "that head)",
        ) from exc
    return model


def packaged_model_folder(name: str) -> Path:
    """The model folder inside an installed package named by `PACKAGED_MODELS` (found
    without importing it); MODEL_NOT_FOUND with the extra to install when it is missing."""
    packaged = PACKAGED_MODELS[name]
    found = importlib.util.find_spec(packaged.module)
    if found is None or found.origin is None:
        raise AppError(
            ErrorCode.MODEL_NOT_FOUND,
            f"pretrained model {name!r} is a Python package that is not installed on this "
            f"worker: pip install 'trainer-worker[{packaged.extra}]' (or `{name}=="
            f"{packaged.version}`) and restart the worker",
        )
    return Path(found.origin).parent / packaged.folder


def freeze_lower_layers(model: PreTrainedModel, layers: int) -> None:
    """Keep the embeddings and the lowest `layers` encoder blocks of a BERT-like model as
    they are (`requires_grad` off; the loop's optimizer takes trainable parameters only):
    no gradient flows below the first trainable block, so a step's backward pass costs only
    the blocks above it. INVALID_INPUT when the model has fewer blocks than `layers`."""
    if layers == 0:
        return
    blocks = int(model.config.num_hidden_layers)
    if layers > blocks:
        raise AppError(
            ErrorCode.INVALID_INPUT,
            f"classifier.freeze_layers ({layers}) exceeds the model's {blocks} encoder blocks",
        )
    base = model.base_model_prefix  # "bert" for BERT-like encoders such as MiniLM
    frozen = (f"{base}.embeddings.", *(f"{base}.encoder.layer.{i}." for i in range(layers)))
    for name, parameter in model.named_parameters():
        if name.startswith(frozen):
            parameter.requires_grad = False
