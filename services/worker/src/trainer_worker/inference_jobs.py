"""Inference on a trained run: generate, score and evaluate, each answering into the Redis
result cache (`platform_core.inference_results`) by request id.

The run's weights are its final model, or its newest checkpoint while it still trains. They are
loaded for each request: RQ runs every job in a freshly forked work horse, so nothing a job
loads outlives it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import redis
from pydantic import BaseModel
from torch import nn

from platform_core.errors import AppError, ErrorCode
from platform_core.inference_results import (
    InferenceError,
    InferenceKind,
    load_record,
    save_record,
)
from platform_core.json_types import JsonObject
from platform_core.layout import EVAL, MODEL, DataLayout
from platform_core.logging import log_context
from platform_core.manifests import RunManifest, read_run_manifest
from platform_core.specs import (
    MAX_SCORE_CHARS,
    ScoreRequest,
    TrainRunSpec,
    validate_generate_request,
    validate_predict_request,
    validate_score_request,
)
from trainer_worker.checkpoints import (
    MODEL_FILE,
    list_checkpoints,
    load_model_file,
    verify_model_file,
)
from trainer_worker.data.corpus import corpus_spec, load_corpus
from trainer_worker.inference.generate import generate
from trainer_worker.inference.score import score
from trainer_worker.models.registry import build_model, resolve_pretrained
from trainer_worker.resume import find_resume_point
from trainer_worker.tokenizers.artifacts import load_tokenizer
from trainer_worker.tokenizers.protocol import Tokenizer

_log = logging.getLogger(__name__)

Work = Callable[[nn.Module, Tokenizer, JsonObject, TrainRunSpec, Path], JsonObject]
# a request on any kind of run: (data root, run id, request) -> result; loads what it needs
RunWork = Callable[[Path, str, JsonObject], JsonObject]


def run_inference(
    kind: InferenceKind,
    request_id: str,
    spec: JsonObject,
    work: Work,
    *,
    client: redis.Redis,
    data_root: Path,
) -> JsonObject:
    """A language-model request: load the run's model and tokenizer, then `work` on them."""

    def on_run(root: Path, run_id: str, request: JsonObject) -> JsonObject:
        model, tokenizer, run_spec, folder = _load_run(root, run_id)
        return work(model, tokenizer, request, run_spec, folder)

    return answer_request(kind, request_id, on_run, client=client, data_root=data_root)


def answer_request(
    kind: InferenceKind,
    request_id: str,
    work: RunWork,
    *,
    client: redis.Redis,
    data_root: Path,
) -> JsonObject:
    """Mark the request running, do `work`, store the result or the typed error."""
    record = load_record(client, kind, request_id)
    if record is None:
        raise AppError(ErrorCode.NOT_FOUND, f"{kind} request {request_id} expired before it ran")
    with log_context(run_id=record.run_id, request_id=request_id):
        save_record(client, record.model_copy(update={"status": "running"}))
        try:
            _VALIDATORS[kind](record.request)  # refuse bad values before loading any weights
            result = work(data_root, record.run_id, record.request)
        except AppError as error:
            _log.info(
                "inference refused: %s", error.message, extra={"error_code": error.code.value}
            )
            failed = record.model_copy(
                update={
                    "status": "failed",
                    "error": InferenceError(code=error.code, message=error.message),
                    "finished_at": time.time(),
                }
            )
            save_record(client, failed)
            return {"request_id": request_id, "status": "failed", "error_code": error.code.value}
        except Exception as error:  # a bug: the request must still end, not stay "running"
            internal = InferenceError(
                code=ErrorCode.INTERNAL, message=f"inference failed ({type(error).__name__})"
            )
            failed = record.model_copy(
                update={"status": "failed", "error": internal, "finished_at": time.time()}
            )
            save_record(client, failed)
            raise
        done = record.model_copy(
            update={"status": "completed", "result": result, "finished_at": time.time()}
        )
        save_record(client, done)
        return {"request_id": request_id, "status": "completed"}


def generate_work(
    model: nn.Module, tokenizer: Tokenizer, request: JsonObject, _spec: TrainRunSpec, _folder: Path
) -> JsonObject:
    return _as_json(generate(model, tokenizer, validate_generate_request(request)))


def score_work(
    model: nn.Module, tokenizer: Tokenizer, request: JsonObject, _spec: TrainRunSpec, _folder: Path
) -> JsonObject:
    return _as_json(score(model, tokenizer, validate_score_request(request)))


def evaluate_work(
    model: nn.Module, tokenizer: Tokenizer, request: JsonObject, spec: TrainRunSpec, folder: Path
) -> JsonObject:
    """Loss and perplexity on the run's own holdout (every token predicted once), appended to
    `eval/evaluations.jsonl`."""
    _no_parameters(request)
    corpus = load_corpus(corpus_spec(spec.corpus), folder.parents[1])  # runs/<id> -> data root
    text = corpus.holdout_text
    if not text:
        raise AppError(ErrorCode.DATA_INVALID, "the run's corpus has no holdout to evaluate on")
    total_nats, predicted = 0.0, 0
    for start in range(0, len(text), MAX_SCORE_CHARS):
        piece = ScoreRequest(text=text[start : start + MAX_SCORE_CHARS], detail_level="summary")
        output = score(model, tokenizer, piece)
        total_nats += output.loss * output.num_predicted
        predicted += output.num_predicted
    loss = total_nats / predicted
    result: JsonObject = {
        "eval_loss": loss,
        "perplexity": math.exp(loss),
        "tokens": predicted,
        "corpus_sha256": corpus.sha256,
        "evaluated_at": time.time(),
    }
    with (folder / EVAL / "evaluations.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(result) + "\n")
    return result


def _no_parameters(request: JsonObject) -> None:
    if request:
        raise AppError(ErrorCode.INVALID_INPUT, "evaluate takes no parameters yet; send {}")


_VALIDATORS: dict[InferenceKind, Callable[[JsonObject], object]] = {
    "generate": validate_generate_request,
    "score": validate_score_request,
    "evaluate": _no_parameters,
    "predict": validate_predict_request,
}


def _as_json(output: BaseModel) -> JsonObject:
    result: JsonObject = json.loads(output.model_dump_json())
    return result


def read_model_run(layout: DataLayout, run_id: str) -> tuple[RunManifest, TrainRunSpec]:
    """A model run's manifest and spec; NOT_FOUND / MODEL_NOT_FOUND in the caller's words."""
    try:
        manifest = read_run_manifest(layout.run_manifest(run_id))
        return manifest, manifest.train_spec()
    except AppError as error:
        if error.code is ErrorCode.DATA_NOT_FOUND:
            raise AppError(ErrorCode.NOT_FOUND, f"run {run_id} has no artifacts") from error
        raise AppError(
            ErrorCode.MODEL_NOT_FOUND,
            f"run {run_id} has no usable manifest ({error.message})",
        ) from error


def _load_run(data_root: Path, run_id: str) -> tuple[nn.Module, Tokenizer, TrainRunSpec, Path]:
    layout = DataLayout(data_root)
    folder = layout.run_dir(run_id)
    manifest, spec = read_model_run(layout, run_id)
    if not (layout.model_dir(run_id) / MODEL_FILE).is_file() and not list_checkpoints(
        layout.checkpoints_dir(run_id)
    ):
        raise AppError(ErrorCode.CONFLICT, f"run {run_id} has no weights yet; try again later")
    tokenizer = load_tokenizer(layout.tokenizer_dir(spec.lm_tokenizer_id))
    # the architecture: a `data:` folder resolved inside the root, as the training did
    model_spec = resolve_pretrained(spec.model, layout.root)
    model = build_model(model_spec, tokenizer.vocab_size, tokenizer.eos_id)
    load_weights(layout, manifest, model)
    model.eval()
    return model, tokenizer, spec, folder


def load_weights(layout: DataLayout, manifest: RunManifest, model: nn.Module) -> None:
    """The run's final weights, verified against the SHA-256 its manifest recorded; else
    (still training, or the final file is damaged) its newest checkpoint that verifies.
    Corrupt checkpoints are skipped here, never moved: the run's own worker owns them."""
    run_id = manifest.run_id
    final = layout.model_dir(run_id) / MODEL_FILE
    recorded = manifest.model_files.get(f"{MODEL}/{MODEL_FILE}")
    if final.is_file():
        try:
            if recorded is None:  # a manifest from before model hashes: nothing to check
                _log.warning("final weights unverified", extra={"event": "model.unverified"})
            else:
                verify_model_file(final, recorded)
            load_model_file(model, final)
            return
        except AppError as error:
            if error.code is not ErrorCode.CHECKPOINT_CORRUPT:
                raise
            _log.error("final weights corrupt: %s; trying checkpoints", error.message)
    search = find_resume_point(layout.checkpoints_dir(run_id), model, quarantine_corrupt=False)
    if search.point is not None:
        _log.info(
            "serving %s",
            search.point.checkpoint.name,
            extra={"event": "inference.weights", "skipped": ", ".join(search.skipped)},
        )
        return
    damaged = [*search.skipped, *([MODEL] if final.is_file() else [])]
    raise AppError(
        ErrorCode.CHECKPOINT_CORRUPT,
        f"run {run_id} has no weights that verify (damaged: {', '.join(damaged) or 'none'})",
    )
