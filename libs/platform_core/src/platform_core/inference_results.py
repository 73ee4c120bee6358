"""Inference requests (generate, score, evaluate, predict) on a trained run, and their
results cached in Redis by request id.

`POST /runs/{id}/generate` enqueues and answers with the request id at once; the worker
writes the record as it goes (queued -> running -> completed | failed) and
`GET /runs/{id}/generate/{request_id}` reads it. Records expire after a day: they are answers
to questions, not artifacts.
"""

from __future__ import annotations

import time
from typing import Literal

import redis
from pydantic import BaseModel, ConfigDict, Field
from rq import Queue

from platform_core.api_models import InferenceStatus
from platform_core.errors import AppError, ErrorCode
from platform_core.json_types import JsonObject
from platform_core.layout import ID_PATTERN
from platform_core.queue import INFERENCE_QUEUE, JOB_FUNCTIONS

InferenceKind = Literal["generate", "score", "evaluate", "predict"]
RESULT_TTL_S = 24 * 3600  # long enough to read a result the next morning


class InferenceError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: ErrorCode
    message: str


class InferenceRecord(BaseModel):
    """The cached state of one request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str
    run_id: str
    kind: InferenceKind
    status: InferenceStatus
    request: JsonObject
    result: JsonObject | None = None
    error: InferenceError | None = None
    created_at: float = Field(default_factory=time.time)
    finished_at: float | None = None


def result_key(kind: InferenceKind, request_id: str) -> str:
    return f"inference:{kind}:{request_id}"


def job_id(kind: InferenceKind, request_id: str) -> str:
    return f"{kind}-{request_id}"


def save_record(client: redis.Redis, record: InferenceRecord) -> None:
    client.set(
        result_key(record.kind, record.request_id), record.model_dump_json(), ex=RESULT_TTL_S
    )


def load_record(
    client: redis.Redis, kind: InferenceKind, request_id: str
) -> InferenceRecord | None:
    raw = client.get(result_key(kind, request_id))
    return None if raw is None else InferenceRecord.model_validate_json(raw)


def enqueue_inference(
    client: redis.Redis,
    kind: InferenceKind,
    run_id: str,
    request_id: str,
    request: JsonObject,
    *,
    model: tuple[str, str] | None = None,
) -> InferenceRecord:
    """Record the request as queued and put its job on the inference queue. Re-sending the
    same request id returns the existing record instead of running it twice. `model`: a
    registered (name, version) that answers instead of the run's own model (A/B serving;
    `run_id` is then the version's source run)."""
    for name, value in (("run id", run_id), ("request id", request_id)):
        if not ID_PATTERN.fullmatch(value):
            raise AppError(
                ErrorCode.INVALID_INPUT,
                f"{name} {value!r} must be 1-64 letters, digits, '_' or '-'",
            )
    record = InferenceRecord(
        request_id=request_id, run_id=run_id, kind=kind, status="queued", request=request
    )
    created = client.set(
        result_key(kind, request_id), record.model_dump_json(), ex=RESULT_TTL_S, nx=True
    )
    # sent before: the first request stands (unless its record expired in between)
    if not created and (existing := load_record(client, kind, request_id)) is not None:
        return existing
    spec: JsonObject = {"run_id": run_id, "request": request}
    if model is not None:
        spec["model"] = {"name": model[0], "version": model[1]}
    Queue(INFERENCE_QUEUE, connection=client).enqueue(
        JOB_FUNCTIONS[kind],
        args=(request_id, spec),
        job_id=job_id(kind, request_id),
        result_ttl=RESULT_TTL_S,
        failure_ttl=RESULT_TTL_S,
        description=f"{kind} on {run_id}",
    )
    return record
