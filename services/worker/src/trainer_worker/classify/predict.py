"""Labels with probabilities for texts, from a classifier's saved model folder (a run's
`model/` or a registered version: both load with `from_pretrained` as is).

Batched and bounded: at most `MAX_PREDICT_TEXTS` texts of at most `MAX_PREDICT_CHARS`
characters per call (INVALID_INPUT past them), each read to the model's first `max_length`
tokens, and the `top_k` most probable labels per text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from platform_core.errors import AppError, ErrorCode
from trainer_worker.classify.model import model_labels
from trainer_worker.dual_agent.tokenizer import load_fast_tokenizer

MAX_PREDICT_TEXTS = 32  # one forward pass per call
MAX_PREDICT_CHARS = 20_000
DEFAULT_TOP_K = 3
BATCH = 16  # texts per forward pass


@dataclass(frozen=True)
class LabelScore:
    label: str
    probability: float


@dataclass(frozen=True)
class TextLabels:
    label: str  # the most probable
    probability: float
    top: list[LabelScore]  # the top_k, most probable first


class ClassifierPredictor:
    """A loaded classifier (eval mode, CPU unless given a device) and its tokenizer."""

    def __init__(self, folder: Path, *, device: str = "cpu", max_length: int | None = None) -> None:
        try:
            loaded = AutoModelForSequenceClassification.from_pretrained(str(folder))
        except (OSError, ValueError) as exc:
            raise AppError(
                ErrorCode.MODEL_NOT_FOUND, f"no sequence classifier could be loaded from {folder}"
            ) from exc
        if not isinstance(loaded, PreTrainedModel):
            raise AppError(ErrorCode.CONFIG_INVALID, f"{folder} is not a transformers model")
        module: nn.Module = loaded  # nn.Module's typed to(); transformers' own is wrapped
        module.to(device).eval()
        self.model = loaded
        self.tokenizer = load_fast_tokenizer(folder)
        self.labels = model_labels(self.model)
        positions = int(self.model.config.max_position_embeddings)
        self.max_length = min(max_length or positions, positions)

    @torch.no_grad()
    def probabilities(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, L) probabilities over `self.labels`."""
        _check(texts)
        device = next(self.model.parameters()).device
        out: list[torch.Tensor] = []
        for first in range(0, len(texts), BATCH):
            encoded = self.tokenizer(
                list(texts[first : first + BATCH]),
                max_length=self.max_length,
                truncation=True,
                padding=True,
                return_tensors="pt",
            )
            logits = self.model(
                input_ids=encoded["input_ids"].to(device),
                attention_mask=encoded["attention_mask"].to(device),
            ).logits  # (B, L)
            out.append(logits.float().softmax(dim=-1).cpu())
        return torch.cat(out)

    def predict(self, texts: Sequence[str], *, top_k: int = DEFAULT_TOP_K) -> list[TextLabels]:
        if not 1 <= top_k <= len(self.labels):
            raise AppError(
                ErrorCode.INVALID_INPUT, f"top_k must be between 1 and {len(self.labels)}"
            )
        answers: list[TextLabels] = []
        for row in self.probabilities(texts):
            values, indices = row.topk(top_k)
            top = [
                LabelScore(self.labels[int(i)], float(p))
                for p, i in zip(values, indices, strict=True)
            ]
            answers.append(TextLabels(top[0].label, top[0].probability, top))
        return answers


def _check(texts: Sequence[str]) -> None:
    if not 1 <= len(texts) <= MAX_PREDICT_TEXTS:
        raise AppError(
            ErrorCode.INVALID_INPUT, f"give between 1 and {MAX_PREDICT_TEXTS} texts per call"
        )
    for n, text in enumerate(texts):
        if not text.strip():
            raise AppError(ErrorCode.INVALID_INPUT, f"text {n} is empty")
        if len(text) > MAX_PREDICT_CHARS:
            raise AppError(
                ErrorCode.INVALID_INPUT, f"text {n} is longer than {MAX_PREDICT_CHARS} characters"
            )
