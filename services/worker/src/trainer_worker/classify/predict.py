"""Labels with probabilities for texts, from a classifier's saved model folder (a run's
`model/` or a registered version: both load with `from_pretrained` as is), and the predict
job's work for a classifier run (`POST /runs/{id}/predict`, shared with the dual-agent
family: the request's bounds and the answer's shape live in platform_core.specs).

Batched: at most `MAX_PREDICT_TEXTS` texts per call, `BATCH` per forward pass, each read to
the run's block size; per text the likeliest labels (at most `MAX_PREDICT_TOP_LABELS`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from platform_core.errors import AppError, ErrorCode
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.specs import (
    MAX_PREDICT_CHARS,
    MAX_PREDICT_TEXTS,
    MAX_PREDICT_TOP_LABELS,
    ClassifierPrediction,
    LabelProbability,
    PredictResult,
    validate_predict_request,
)
from trainer_worker.classify.model import model_labels
from trainer_worker.dual_agent.tokenizer import load_fast_tokenizer
from trainer_worker.inference_jobs import read_model_run

BATCH = 16  # texts per forward pass


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
        # default: the length the run trained on (its tokenizer's model_max_length)
        self.max_length = min(max_length or int(self.tokenizer.model_max_length), positions)

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

    def predict(self, texts: Sequence[str]) -> list[ClassifierPrediction]:
        top_k = min(MAX_PREDICT_TOP_LABELS, len(self.labels))
        answers: list[ClassifierPrediction] = []
        for row in self.probabilities(texts):
            values, indices = row.topk(top_k)
            top = [
                LabelProbability(label=self.labels[int(i)], probability=float(p))
                for p, i in zip(values, indices, strict=True)
            ]
            answers.append(
                ClassifierPrediction(label=top[0].label, probability=top[0].probability, top=top)
            )
        return answers


def _check(texts: Sequence[str]) -> None:
    """The request's bounds, for callers that did not come through `PredictRequest`."""
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


def classifier_predict_work(data_root: Path, run_id: str, request: JsonObject) -> JsonObject:
    """The predict job's work for a classifier run: validate, load, answer (JSON-safe)."""
    parsed = validate_predict_request(request)
    layout = DataLayout(data_root)
    manifest, spec = read_model_run(layout, run_id)
    if manifest.classifier is None:
        raise AppError(
            ErrorCode.CONFLICT,
            f"run {run_id} has not finished: its model is saved when training ends",
        )
    predictor = ClassifierPredictor(layout.model_dir(run_id), max_length=spec.train.block_size)
    return _answer(predictor, parsed.texts)


def registered_predict_work(
    model: tuple[str, str], data_root: Path, _run_id: str, request: JsonObject
) -> JsonObject:
    """The predict job's work for a registered version (A/B serving): its own files in
    `models/<name>/<version>/`, read to the length its tokenizer was saved with."""
    parsed = validate_predict_request(request)
    predictor = ClassifierPredictor(DataLayout(data_root).model_version_dir(*model))
    return _answer(predictor, parsed.texts)


def _answer(predictor: ClassifierPredictor, texts: Sequence[str]) -> JsonObject:
    result = PredictResult(predictions=list(predictor.predict(texts)))
    answer: JsonObject = json.loads(result.model_dump_json())
    return answer
