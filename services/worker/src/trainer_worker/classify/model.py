"""The classifier: a `transformers` sequence classifier (AutoModelForSequenceClassification),
built from a preset and trained from scratch, or loaded pretrained (a `data:` folder or a hub
id, local cache first) with a fresh head over the dataset's labels.

Either way `config.id2label` names the dataset's labels, so the saved folder loads with
`AutoModelForSequenceClassification.from_pretrained` as is (the registry relies on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
)

from platform_core.errors import AppError, ErrorCode


@dataclass(frozen=True)
class ClassifierPreset:
    """A small BERT trained from scratch (nanoGPT-style config: one default per field)."""

    hidden_size: int = 64  # width of every token state
    num_layers: int = 2  # transformer blocks
    num_heads: int = 2  # attention heads (hidden_size / num_heads per head)
    intermediate_size: int = 128  # feed-forward width
    max_positions: int = 128  # longest input, tokens ([CLS] and [SEP] included)
    dropout: float = 0.1  # hidden and attention dropout


# platform_core.specs.PRESET_SHAPES["classifier"] mirrors these (a test keeps them equal)
CLASSIFIER_PRESETS = {
    "tiny": ClassifierPreset(),
    "small": ClassifierPreset(
        hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, max_positions=256
    ),
}


def build_classifier(
    preset: ClassifierPreset,
    vocab_size: int,
    pad_id: int,
    labels: Sequence[str],
    *,
    dropout: float | None = None,
    max_positions: int | None = None,
) -> PreTrainedModel:
    rate = preset.dropout if dropout is None else dropout
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=preset.hidden_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        intermediate_size=preset.intermediate_size,
        max_position_embeddings=max_positions or preset.max_positions,
        hidden_dropout_prob=rate,
        attention_probs_dropout_prob=rate,
        pad_token_id=pad_id,
        id2label=dict(enumerate(labels)),  # sets num_labels
        label2id={label: i for i, label in enumerate(labels)},
    )
    return BertForSequenceClassification(config)


def load_pretrained_classifier(source: str | Path, labels: Sequence[str]) -> PreTrainedModel:
    """A pretrained encoder with a new head over `labels` (a head of another size is
    replaced, not an error: fine-tuning a checkpoint on a new label set is the point)."""
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(source),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError) as exc:
        raise AppError(
            ErrorCode.DATA_NOT_FOUND,
            f"model {source} could not be loaded as a sequence classifier (not a model "
            "folder, an architecture without a classification head, or a hub id that is "
            "neither cached nor reachable)",
        ) from exc
    if not isinstance(model, PreTrainedModel):
        raise AppError(ErrorCode.CONFIG_INVALID, f"{source} is not a transformers model")
    return model


def model_labels(model: PreTrainedModel) -> list[str]:
    """The head's labels in index order."""
    names = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    return [names[i] for i in range(len(names))]
