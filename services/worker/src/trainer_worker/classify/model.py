"""The classifier: a `transformers` sequence classifier (AutoModelForSequenceClassification),
built from a preset and trained from scratch, or loaded pretrained (a `data:` folder, a hub
id from the local cache first, or a packaged model such as MiniLM) with a fresh head over the
dataset's labels; the encoder parts are `trainer_worker.models.encoder`'s, shared with the
dual-agent family.

Either way `config.id2label` names the dataset's labels, so the saved folder loads with
`AutoModelForSequenceClassification.from_pretrained` as is (the registry relies on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transformers import (
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
    PreTrainedModel,
)

from trainer_worker.models.encoder import (
    ENCODER_PRESETS,
    EncoderPreset,
    encoder_config,
    load_pretrained,
)

# the shared encoder's presets (platform_core.specs.PRESET_SHAPES["classifier"] mirrors them)
CLASSIFIER_PRESETS = ENCODER_PRESETS


def build_classifier(
    preset: EncoderPreset,
    vocab_size: int,
    pad_id: int,
    labels: Sequence[str],
    *,
    dropout: float | None = None,
    max_positions: int | None = None,
) -> PreTrainedModel:
    config = encoder_config(
        preset, vocab_size, pad_id, dropout=dropout, max_positions=max_positions
    )
    config.id2label = dict(enumerate(labels))  # sets num_labels
    config.label2id = {label: i for i, label in enumerate(labels)}
    return BertForSequenceClassification(config)


def load_pretrained_classifier(source: Path, labels: Sequence[str]) -> PreTrainedModel:
    """A pretrained encoder with a new head over `labels` (a head of another size is
    replaced, not an error: fine-tuning a checkpoint on a new label set is the point)."""
    return load_pretrained(
        AutoModelForSequenceClassification,
        source,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        ignore_mismatched_sizes=True,
    )


def model_labels(model: PreTrainedModel) -> list[str]:
    """The head's labels in index order."""
    names = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    return [names[i] for i in range(len(names))]
