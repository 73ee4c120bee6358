"""What each endpoint of the trainer API sends and what its answer parses into, as plain
values: `ApiCall` for JSON endpoints, `StreamCall` for the streamed ones (SSE, tar.gz).

Both clients in `http_client` send these, so an endpoint is described once. Path segments
are percent-encoded: an id with a `/` in it reaches the API as one (refused) id instead of
another path. Pure helpers that turn streamed messages into typed values live here too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from platform_core.ab_analysis import ABReport
from platform_core.ab_models import (
    FeedbackRecorded,
    FeedbackRequest,
    ServeAccepted,
    ServeRequest,
    TrafficPublic,
    TrafficSplit,
)
from platform_core.api_models import (
    ArtifactKind,
    CancelResult,
    DatasetCreate,
    DatasetList,
    DatasetPublic,
    EvaluateRequest,
    GenerateRecord,
    HealthStatus,
    InferenceAccepted,
    JobAccepted,
    LogLine,
    ModelList,
    ModelVersionCreate,
    ModelVersionList,
    ModelVersionPublic,
    PredictRecord,
    PromoteRequest,
    ReadyStatus,
    RecentEvents,
    RollbackRequest,
    RunCreate,
    RunEval,
    RunList,
    RunLogs,
    RunPublic,
    RunQuery,
    ScoreRecord,
    TokenizerCreate,
    TokenizerList,
    TokenizerPublic,
)
from platform_core.events import EventDecodeError
from platform_core.model_registry import RegistryChange
from platform_core.retrain_specs import (
    CompareRequest,
    ComparisonPublic,
    RetrainAccepted,
    RetrainPolicy,
    RetrainPolicyPublic,
    RetrainRequest,
)
from platform_core.specs import GenerateRequest, PredictRequest, ScoreRequest
from platform_core.sse import SseMessage, StreamedEvent, streamed_event

ModelT = TypeVar("ModelT", bound=BaseModel)
REQUEST_ID_HEADER: Final = "X-Request-ID"
API_KEY_HEADER: Final = "X-Api-Key"
IDEMPOTENCY_KEY_HEADER: Final = "Idempotency-Key"
LAST_EVENT_ID_HEADER: Final = "Last-Event-ID"
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ApiCall(Generic[ModelT]):
    """One endpoint call: what to send and what a 2xx answer parses into."""

    method: str  # HTTP method
    path: str  # starts with "/", appended to the base URL
    model: type[ModelT]  # the pydantic model of a 2xx body
    body: BaseModel | None = None  # sent as JSON
    params: Mapping[str, str] | None = None  # query string
    idempotency_key: str | None = None  # makes a POST safe to retry


@dataclass(frozen=True, slots=True)
class StreamCall:
    """A GET whose body is read as it arrives."""

    path: str
    accept: str  # the media type asked for
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None


def _segment(value: str) -> str:
    return quote(value, safe="")


def _run(run_id: str, *rest: str) -> str:
    return "/".join(["/runs", _segment(run_id), *rest])


HEALTHZ: Final = ApiCall("GET", "/healthz", HealthStatus)
READYZ: Final = ApiCall("GET", "/readyz", ReadyStatus)
LIST_TOKENIZERS: Final = ApiCall("GET", "/tokenizers", TokenizerList)


def train_tokenizer(
    body: TokenizerCreate, idempotency_key: str | None = None
) -> ApiCall[JobAccepted]:
    return ApiCall("POST", "/tokenizers/train", JobAccepted, body, None, idempotency_key)


def get_tokenizer(tokenizer_id: str) -> ApiCall[TokenizerPublic]:
    return ApiCall("GET", f"/tokenizers/{_segment(tokenizer_id)}", TokenizerPublic)


LIST_DATASETS: Final = ApiCall("GET", "/datasets", DatasetList)


def prepare_dataset(
    body: DatasetCreate, idempotency_key: str | None = None
) -> ApiCall[JobAccepted]:
    return ApiCall("POST", "/datasets", JobAccepted, body, None, idempotency_key)


def get_dataset(dataset_id: str) -> ApiCall[DatasetPublic]:
    return ApiCall("GET", f"/datasets/{_segment(dataset_id)}", DatasetPublic)


LIST_MODELS: Final = ApiCall("GET", "/models", ModelList)


def model_versions(name: str) -> ApiCall[ModelVersionList]:
    return ApiCall("GET", f"/models/{_segment(name)}/versions", ModelVersionList)


def register_model_version(name: str, body: ModelVersionCreate) -> ApiCall[ModelVersionPublic]:
    return ApiCall("POST", f"/models/{_segment(name)}/versions", ModelVersionPublic, body)


def promote_model(name: str, version: str, body: PromoteRequest) -> ApiCall[RegistryChange]:
    path = f"/models/{_segment(name)}/versions/{_segment(version)}/promote"
    return ApiCall("POST", path, RegistryChange, body)


def rollback_model(name: str, body: RollbackRequest) -> ApiCall[RegistryChange]:
    return ApiCall("POST", f"/models/{_segment(name)}/rollback", RegistryChange, body)


def model_traffic(name: str) -> ApiCall[TrafficPublic]:
    return ApiCall("GET", f"/models/{_segment(name)}/traffic", TrafficPublic)


def set_model_traffic(name: str, body: TrafficSplit) -> ApiCall[TrafficPublic]:
    return ApiCall("PUT", f"/models/{_segment(name)}/traffic", TrafficPublic, body)


def serve_model(name: str, body: ServeRequest) -> ApiCall[ServeAccepted]:
    return ApiCall("POST", f"/models/{_segment(name)}/predict", ServeAccepted, body)


def served_prediction(name: str, request_id: str) -> ApiCall[PredictRecord]:
    path = f"/models/{_segment(name)}/predictions/{_segment(request_id)}"
    return ApiCall("GET", path, PredictRecord)


def model_feedback(name: str, body: FeedbackRequest) -> ApiCall[FeedbackRecorded]:
    return ApiCall("POST", f"/models/{_segment(name)}/feedback", FeedbackRecorded, body)


def model_ab(name: str) -> ApiCall[ABReport]:
    return ApiCall("GET", f"/models/{_segment(name)}/ab", ABReport)


def train_model(body: RunCreate, idempotency_key: str | None = None) -> ApiCall[JobAccepted]:
    return ApiCall("POST", "/runs/train", JobAccepted, body, None, idempotency_key)


def list_runs(query: RunQuery | None = None) -> ApiCall[RunList]:
    found = (query or RunQuery()).model_dump(exclude_none=True)
    return ApiCall("GET", "/runs", RunList, params={k: str(v) for k, v in found.items()})


def get_run(run_id: str) -> ApiCall[RunPublic]:
    return ApiCall("GET", _run(run_id), RunPublic)


def cancel_run(run_id: str) -> ApiCall[CancelResult]:
    return ApiCall("POST", _run(run_id, "cancel"), CancelResult)


def run_logs(run_id: str, *, tail: int = 100) -> ApiCall[RunLogs]:
    return ApiCall("GET", _run(run_id, "logs"), RunLogs, params={"tail": str(tail)})


def evaluate(run_id: str, *, idempotency_key: str | None = None) -> ApiCall[InferenceAccepted]:
    path = _run(run_id, "evaluate")
    return ApiCall("POST", path, InferenceAccepted, EvaluateRequest(), None, idempotency_key)


def get_eval(run_id: str, *, request_id: str | None = None) -> ApiCall[RunEval]:
    params = None if request_id is None else {"request_id": request_id}
    return ApiCall("GET", _run(run_id, "eval"), RunEval, params=params)


def generate(
    run_id: str, request: GenerateRequest, *, idempotency_key: str | None = None
) -> ApiCall[InferenceAccepted]:
    path = _run(run_id, "generate")
    return ApiCall("POST", path, InferenceAccepted, request, None, idempotency_key)


def get_generate(run_id: str, request_id: str) -> ApiCall[GenerateRecord]:
    return ApiCall("GET", _run(run_id, "generate", _segment(request_id)), GenerateRecord)


def score(
    run_id: str, request: ScoreRequest, *, idempotency_key: str | None = None
) -> ApiCall[InferenceAccepted]:
    return ApiCall("POST", _run(run_id, "score"), InferenceAccepted, request, None, idempotency_key)


def get_score(run_id: str, request_id: str) -> ApiCall[ScoreRecord]:
    return ApiCall("GET", _run(run_id, "score", _segment(request_id)), ScoreRecord)


def predict(
    run_id: str, request: PredictRequest, *, idempotency_key: str | None = None
) -> ApiCall[InferenceAccepted]:
    path = _run(run_id, "predict")
    return ApiCall("POST", path, InferenceAccepted, request, None, idempotency_key)


def get_predict(run_id: str, request_id: str) -> ApiCall[PredictRecord]:
    return ApiCall("GET", _run(run_id, "predict", _segment(request_id)), PredictRecord)


def run_events(run_id: str, last_event_id: str | None = None) -> StreamCall:
    headers = None if last_event_id is None else {LAST_EVENT_ID_HEADER: last_event_id}
    return StreamCall(_run(run_id, "events"), "text/event-stream", headers=headers)


def recent_events(run_id: str, types: Sequence[str], *, limit: int) -> ApiCall[RecentEvents]:
    """The run's newest `limit` events of `types` (every type when empty), oldest first."""
    params = {"limit": str(limit)} | ({"types": ",".join(types)} if types else {})
    return ApiCall("GET", _run(run_id, "events", "recent"), RecentEvents, None, params)


def log_stream(run_id: str, *, tail: int = 100) -> StreamCall:
    return StreamCall(_run(run_id, "logs", "stream"), "text/event-stream", {"tail": str(tail)})


def run_chart(run_id: str) -> StreamCall:
    return StreamCall(_run(run_id, "chart.png"), "image/png")


def artifact(kind: ArtifactKind, artifact_id: str) -> StreamCall:
    return StreamCall(f"/artifacts/{kind}/{_segment(artifact_id)}", "application/gzip")


def events_of(messages: list[SseMessage]) -> Iterator[StreamedEvent]:
    """The run events among `messages`. An event this version cannot decode (a newer
    worker's) is logged and skipped: following a run must not stop on it."""
    for message in messages:
        try:
            yield streamed_event(message)
        except EventDecodeError as exc:
            _log.warning(
                "skipping an event this client cannot decode: %s",
                exc.message,
                extra={"event": "http_client.undecodable_event", "error_code": exc.code.value},
            )


def log_lines_of(messages: list[SseMessage]) -> Iterator[LogLine]:
    """The log lines among `messages`; one that does not parse is logged and skipped."""
    for message in messages:
        try:
            yield LogLine.model_validate_json(message.data)
        except ValidationError:
            _log.warning(
                "skipping a log line this client cannot parse",
                extra={"event": "http_client.unparsable_log_line"},
            )


# ---- offline comparison and retraining (platform_core.retraining) --------------------------


def compare_models(name: str, body: CompareRequest) -> ApiCall[JobAccepted]:
    return ApiCall("POST", f"/models/{_segment(name)}/compare", JobAccepted, body)


def get_comparison(name: str, run_id: str) -> ApiCall[ComparisonPublic]:
    path = f"/models/{_segment(name)}/comparisons/{_segment(run_id)}"
    return ApiCall("GET", path, ComparisonPublic)


def retrain_model(name: str, body: RetrainRequest) -> ApiCall[RetrainAccepted]:
    return ApiCall("POST", f"/models/{_segment(name)}/retrain", RetrainAccepted, body)


def set_retrain_policy(name: str, body: RetrainPolicy) -> ApiCall[RetrainPolicyPublic]:
    return ApiCall("PUT", f"/models/{_segment(name)}/retrain-policy", RetrainPolicyPublic, body)


def get_retrain_policy(name: str) -> ApiCall[RetrainPolicyPublic]:
    return ApiCall("GET", f"/models/{_segment(name)}/retrain-policy", RetrainPolicyPublic)
