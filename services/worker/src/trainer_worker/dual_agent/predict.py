"""Predict with a finished dual-agent run: per text, every criterion's probability and
decision (thresholds tuned on the run's validation split) and the evidence span in
characters. Texts go through the model as one batch (the request bounds their number)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, BertConfig, BertModel, PreTrainedTokenizerFast

from platform_core.errors import AppError, ErrorCode
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.specs import (
    CriterionScore,
    DualAgentPrediction,
    EvidenceSpanOut,
    PredictResult,
    TextPrediction,
    validate_predict_request,
)
from trainer_worker.dual_agent.criteria import CRITERIA
from trainer_worker.dual_agent.decode import criteria_probs, decode_spans
from trainer_worker.dual_agent.encoding import encode_texts
from trainer_worker.dual_agent.model import DualAgentModel
from trainer_worker.dual_agent.run import ENCODER_DIR
from trainer_worker.dual_agent.tokenizer import load_fast_tokenizer
from trainer_worker.family_run import TOKENIZER_DIR
from trainer_worker.inference_jobs import load_weights, read_model_run


@torch.no_grad()
def predict_texts(
    model: DualAgentModel,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    thresholds: Sequence[float],
    max_length: int,
) -> PredictResult:
    was_training = model.training
    model.eval()
    try:
        ids, mask, offsets = encode_texts(tokenizer, texts, max_length)  # (N, T) x2, (N, T, 2)
        criteria, start, end = model(ids, mask)
    finally:
        model.train(was_training)
    probs = criteria_probs(criteria, model.criteria_head)  # (N, C)
    spans = decode_spans(start.float(), end.float(), offsets)
    predictions: list[TextPrediction] = []
    for row, text in enumerate(texts):
        scores = [
            CriterionScore(
                criterion=name,
                probability=float(probs[row, c]),
                threshold=thresholds[c],
                matched=float(probs[row, c]) >= thresholds[c],
            )
            for c, name in enumerate(CRITERIA)
        ]
        span = spans[row]
        evidence = (
            None
            if span is None
            else EvidenceSpanOut(start=span[0], end=span[1], text=text[span[0] : span[1]])
        )
        predictions.append(
            DualAgentPrediction(
                criteria=scores,
                matched=[score.criterion for score in scores if score.matched],
                evidence=evidence,
            )
        )
    return PredictResult(predictions=predictions)


def load_predictor(
    data_root: Path, run_id: str
) -> tuple[DualAgentModel, PreTrainedTokenizerFast, list[float], int]:
    """A finished run's model (final weights verified against its manifest), tokenizer,
    tuned thresholds and input length."""
    layout = DataLayout(data_root)
    manifest, spec = read_model_run(layout, run_id)
    if spec.model.family != "dual_agent":
        raise AppError(
            ErrorCode.INVALID_INPUT,
            f"run {run_id} is a {spec.model.family} model; predict needs a dual_agent or "
            "classifier run "
            "(a language model answers generate and score)",
        )
    record = manifest.dual_agent
    if record is None:
        raise AppError(
            ErrorCode.CONFLICT,
            f"run {run_id} has not finished: its thresholds are tuned when training ends",
        )
    folder = layout.model_dir(run_id)
    tokenizer = load_fast_tokenizer(folder / TOKENIZER_DIR)
    config = AutoConfig.from_pretrained(str(folder / ENCODER_DIR))
    if spec.model.pretrained is None and isinstance(config, BertConfig):
        encoder = BertModel(config, add_pooling_layer=False)  # as build_encoder made it
    else:  # as AutoModel.from_pretrained made it
        encoder = AutoModel.from_config(config)  # type: ignore[no-untyped-call]  # untyped in transformers
    model = DualAgentModel(encoder, record.criteria_head)
    load_weights(layout, manifest, model)
    thresholds = [record.thresholds[name] for name in CRITERIA]
    return model, tokenizer, thresholds, spec.train.block_size


def predict_work(data_root: Path, run_id: str, request: JsonObject) -> JsonObject:
    """The predict job's work: validate, load the run, answer (JSON-safe)."""
    parsed = validate_predict_request(request)
    model, tokenizer, thresholds, max_length = load_predictor(data_root, run_id)
    result = predict_texts(model, tokenizer, parsed.texts, thresholds, max_length)
    answer: JsonObject = json.loads(result.model_dump_json())
    return answer
