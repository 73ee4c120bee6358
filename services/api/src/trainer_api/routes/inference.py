"""Inference on a trained run: generate, score, evaluate, predict. Each request is validated,
queued on the inference queue and answered at once with a request id to poll."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import redis
from fastapi import APIRouter, Body, Query, status
from pydantic import BaseModel

from platform_core.api_models import (
    EvaluateRecord,
    EvaluateRequest,
    GenerateRecord,
    InferenceAccepted,
    PredictRecord,
    RunEval,
    ScoreRecord,
)
from platform_core.errors import AppError, ErrorCode
from platform_core.inference_results import InferenceRecord, enqueue_inference, load_record
from platform_core.json_types import JsonObject
from platform_core.specs import ID_REGEX, GenerateRequest, PredictRequest, ScoreRequest
from trainer_api.deps import DataRootDep, IdempotencyKeyHeader, RedisDep, RequestIdPath, RunIdPath
from trainer_api.errors import error_responses
from trainer_api.eval_views import load_eval
from trainer_api.idempotency import once
from trainer_api.run_views import model_run_exists, run_folder
from trainer_api.submissions import new_id

router = APIRouter(prefix="/runs", tags=["inference"], responses=error_responses(401))
Kind = Literal["generate", "score", "evaluate", "predict"]
_PREFIX: dict[Kind, str] = {
    "generate": "gen",
    "score": "score",
    "evaluate": "eval",
    "predict": "pred",
}
_ACCEPTED = error_responses(404, 409, 413, 422)
_POLLED = error_responses(404, 422)


def _accept(
    client: redis.Redis,
    data_root: DataRootDep,
    kind: Kind,
    *,
    run_id: str,
    body: BaseModel,
    idempotency_key: str | None,
) -> InferenceAccepted:
    if not model_run_exists(client, data_root, run_id):
        raise AppError(ErrorCode.NOT_FOUND, f"model run {run_id} does not exist")

    def act() -> InferenceAccepted:
        request: JsonObject = json.loads(body.model_dump_json())
        record = enqueue_inference(client, kind, run_id, new_id(_PREFIX[kind]), request)
        return InferenceAccepted(
            request_id=record.request_id, run_id=run_id, kind=kind, status=record.status
        )

    return once(
        client,
        f"{kind}:{run_id}",
        idempotency_key=idempotency_key,
        body=body,
        act=act,
        answer_model=InferenceAccepted,
    )


def _record(client: redis.Redis, kind: Kind, run_id: str, request_id: str) -> JsonObject:
    record: InferenceRecord | None = load_record(client, kind, request_id)
    if record is None or record.run_id != run_id:
        raise AppError(
            ErrorCode.NOT_FOUND, f"no {kind} request {request_id} on run {run_id} (or it expired)"
        )
    found: JsonObject = json.loads(record.model_dump_json(exclude={"kind"}))
    return found


@router.post("/{run_id}/generate", status_code=status.HTTP_202_ACCEPTED, responses=_ACCEPTED)
def generate(
    run_id: RunIdPath,
    body: GenerateRequest,
    client: RedisDep,
    data_root: DataRootDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> InferenceAccepted:
    """Queue a text generation; poll GET /runs/{run_id}/generate/{request_id}."""
    return _accept(
        client, data_root, "generate", run_id=run_id, body=body, idempotency_key=idempotency_key
    )


@router.get("/{run_id}/generate/{request_id}", responses=_POLLED)
def get_generate(run_id: RunIdPath, request_id: RequestIdPath, client: RedisDep) -> GenerateRecord:
    """A generation's status, and its outputs once completed."""
    return GenerateRecord.model_validate(_record(client, "generate", run_id, request_id))


@router.post("/{run_id}/score", status_code=status.HTTP_202_ACCEPTED, responses=_ACCEPTED)
def score(
    run_id: RunIdPath,
    body: ScoreRequest,
    client: RedisDep,
    data_root: DataRootDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> InferenceAccepted:
    """Queue the scoring of a text; poll GET /runs/{run_id}/score/{request_id}."""
    return _accept(
        client, data_root, "score", run_id=run_id, body=body, idempotency_key=idempotency_key
    )


@router.get("/{run_id}/score/{request_id}", responses=_POLLED)
def get_score(run_id: RunIdPath, request_id: RequestIdPath, client: RedisDep) -> ScoreRecord:
    """A scoring's status, and loss, perplexity and per-token surprisal once completed."""
    return ScoreRecord.model_validate(_record(client, "score", run_id, request_id))


@router.post("/{run_id}/predict", status_code=status.HTTP_202_ACCEPTED, responses=_ACCEPTED)
def predict(
    run_id: RunIdPath,
    body: PredictRequest,
    client: RedisDep,
    data_root: DataRootDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> InferenceAccepted:
    """Queue labelling texts with a dual-agent run; poll GET /runs/{run_id}/predict/{request_id}."""
    return _accept(
        client, data_root, "predict", run_id=run_id, body=body, idempotency_key=idempotency_key
    )


@router.get("/{run_id}/predict/{request_id}", responses=_POLLED)
def get_predict(run_id: RunIdPath, request_id: RequestIdPath, client: RedisDep) -> PredictRecord:
    """A prediction's status, and per text the criteria and evidence once completed."""
    return PredictRecord.model_validate(_record(client, "predict", run_id, request_id))


@router.post("/{run_id}/evaluate", status_code=status.HTTP_202_ACCEPTED, responses=_ACCEPTED)
def evaluate(
    run_id: RunIdPath,
    client: RedisDep,
    data_root: DataRootDep,
    body: Annotated[EvaluateRequest | None, Body()] = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> InferenceAccepted:
    """Queue an evaluation on the run's holdout; see GET /runs/{run_id}/eval?request_id=."""
    request = body or EvaluateRequest()
    return _accept(
        client,
        data_root,
        "evaluate",
        run_id=run_id,
        body=request,
        idempotency_key=idempotency_key,
    )


@router.get("/{run_id}/eval", responses=_POLLED)
def get_eval(
    run_id: RunIdPath,
    client: RedisDep,
    data_root: DataRootDep,
    request_id: Annotated[str | None, Query(pattern=ID_REGEX)] = None,
) -> RunEval:
    """Eval history and samples of the training, every evaluation since, and optionally the
    status of one evaluate request."""
    if not model_run_exists(client, data_root, run_id):
        raise AppError(ErrorCode.NOT_FOUND, f"model run {run_id} does not exist")
    found = load_eval(run_folder(data_root, run_id), run_id)
    if request_id is None:
        return found
    record = EvaluateRecord.model_validate(_record(client, "evaluate", run_id, request_id))
    return found.model_copy(update={"request": record})
