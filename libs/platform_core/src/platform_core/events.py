"""Typed, versioned events shared by the worker, the API and the bot.

One frozen model per event type, each with `type`, `event_id`, `run_id` (= job id),
`user_id` (the Discord owner who asked, optional), `ts` and a typed `payload`. Encoding is
JSON; decoding anything unknown or malformed raises one `EventDecodeError`, so consumers
catch a single exception and never crash on a bad entry.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from platform_core.errors import AppError, ErrorCode, FailureClass
from platform_core.specs import SEMVER_REGEX

JobKind = Literal[
    "train_tokenizer",
    "train_model",
    "evaluate",
    "generate",
    "score",
    "predict",
    "study",
    "prepare_dataset",
    "study_trial",
    "compare_models",
    "retrain_model",
]
CancelStage = Literal["cooperative", "forced"]
TrialState = Literal["COMPLETE", "PRUNED", "FAIL"]
Stage = Literal["staging", "production", "archived"]  # a registered model version's stage
ParamValue = float | int | str | bool


class EventDecodeError(AppError):
    """Raised for any event that cannot be decoded: bad JSON, unknown type or version,
    missing or extra fields, wrong field types."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.EVENT_DECODE_FAILED, message)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---- payloads -------------------------------------------------------------------------------


class JobQueuedPayload(_Strict):
    kind: JobKind
    queue: str
    description: str = ""


class JobStartedPayload(_Strict):
    kind: JobKind
    worker: str
    attempt: int = Field(ge=1)
    # the newest checkpoint the attempt found when it started, before verifying it; the
    # progress notice "resumed from step N" that follows names the step it really resumed
    # from (an older one when the newest was corrupt)
    resumed_from_step: int | None = Field(default=None, ge=0)


class JobProgressPayload(_Strict):
    step: int = Field(ge=0)
    total_steps: int | None = Field(default=None, ge=1)
    epoch: float = Field(ge=0)
    fraction: float = Field(ge=0, le=1)
    eta_s: float | None = Field(default=None, ge=0)
    message: str = ""


class JobCompletedPayload(_Strict):
    duration_s: float = Field(ge=0)
    message: str = ""
    artifact_dir: str | None = None
    # a kind's report for whoever reads the event (a prepared dataset's counts); None: none
    report: dict[str, JsonValue] | None = None


class JobFailedPayload(_Strict):
    error_code: ErrorCode
    failure_class: FailureClass
    message: str
    retrying: bool = False


class JobCancelledPayload(_Strict):
    stage: CancelStage
    step: int | None = Field(default=None, ge=0)
    message: str = ""


class MetricsConfigPayload(_Strict):
    model_family: str
    preset: str | None = None
    num_params: int = Field(ge=0)
    vocab_size: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    max_steps: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    device: str
    precision: str
    seed: int
    tokenizer_id: str | None = None


class MetricsProgressPayload(_Strict):
    step: int = Field(ge=0)
    epoch: float = Field(ge=0)
    loss: float
    lr: float = Field(ge=0)
    tokens_per_s: float = Field(ge=0)
    eta_s: float | None = Field(default=None, ge=0)
    grad_norm: float | None = None


class MetricsEvalPayload(_Strict):
    step: int = Field(ge=0)
    eval_loss: float
    perplexity: float
    metrics: dict[str, float] = Field(default_factory=dict)


class MetricsCheckpointPayload(_Strict):
    step: int = Field(ge=0)
    path: str
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    is_best: bool = False
    metric: float | None = None


class MetricsCompletedPayload(_Strict):
    steps: int = Field(ge=0)
    duration_s: float = Field(ge=0)
    final_loss: float | None = None
    final_eval_loss: float | None = None
    final_perplexity: float | None = None
    tokens_per_s: float | None = Field(default=None, ge=0)
    artifact_dir: str | None = None
    # a task's final figures, e.g. "test/criteria_matcher/f1" and its "baseline/..." twin
    metrics: dict[str, float] = Field(default_factory=dict)


class StudyStartedPayload(_Strict):
    study_name: str
    n_trials: int = Field(ge=1)
    metric: str
    direction: Literal["minimize", "maximize"]


class StudyTrialCompletedPayload(_Strict):
    trial_number: int = Field(ge=0)
    state: TrialState
    value: float | None = None
    params: dict[str, ParamValue] = Field(default_factory=dict)
    trial_run_id: str | None = None
    is_best: bool = False  # the study's best trial so far (its checkpoint is the one kept)


class StudyCompletedPayload(_Strict):
    n_completed: int = Field(ge=0)
    n_pruned: int = Field(ge=0)
    n_failed: int = Field(ge=0)
    duration_s: float = Field(ge=0)
    best_trial_number: int | None = Field(default=None, ge=0)
    best_value: float | None = None
    best_params: dict[str, ParamValue] = Field(default_factory=dict)


class ModelStageChangedPayload(_Strict):
    """A registry change that committed: `version` of model `name` moved from one stage to
    another (a promotion, or a rollback that put `version` back in production)."""

    name: str = Field(min_length=1)
    version: str = Field(pattern=SEMVER_REGEX)
    from_stage: Stage
    to_stage: Stage
    previous_production: str | None = None  # the production version before the change
    actor: str  # who asked (a Discord id, a user name, "api")
    reason: str = ""


class ModelRetrainedPayload(_Strict):
    """A retraining's verdict: the candidate version trained on newer data, compared with
    the production version on the same held-out test split (the offline A/B), promoted or
    kept (it stays in staging), with the reason and the numbers it rests on."""

    name: str = Field(min_length=1)
    trigger: Literal["manual", "schedule", "data_growth"]
    decision: Literal["PROMOTE", "KEEP"]
    reason: str
    production_version: str = Field(pattern=SEMVER_REGEX)  # the version compared against
    candidate_version: str = Field(pattern=SEMVER_REGEX)
    dataset_id: str
    current_accuracy: float
    candidate_accuracy: float
    p_value: float = Field(ge=0, le=1)
    report: str  # the comparison's report.json, relative to the data root


# ---- events ---------------------------------------------------------------------------------


def new_event_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Envelope(_Strict):
    event_id: str = Field(default_factory=new_event_id, min_length=1)
    run_id: str = Field(min_length=1)
    user_id: int | None = None
    ts: datetime = Field(default_factory=utc_now)

    @property
    def ends_run(self) -> bool:
        """Whether this is the last lifecycle event of its run: the one rule every consumer
        (the API's streams, `trainctl follow`, the bot) uses to stop following a run."""
        return False


class JobQueued(_Envelope):
    type: Literal["trainer.job.queued.v1"] = "trainer.job.queued.v1"
    payload: JobQueuedPayload


class JobStarted(_Envelope):
    type: Literal["trainer.job.started.v1"] = "trainer.job.started.v1"
    payload: JobStartedPayload


class JobProgress(_Envelope):
    type: Literal["trainer.job.progress.v1"] = "trainer.job.progress.v1"
    payload: JobProgressPayload


class JobCompleted(_Envelope):
    type: Literal["trainer.job.completed.v1"] = "trainer.job.completed.v1"
    payload: JobCompletedPayload

    @property
    def ends_run(self) -> bool:
        return True


class JobFailed(_Envelope):
    type: Literal["trainer.job.failed.v1"] = "trainer.job.failed.v1"
    payload: JobFailedPayload

    @property
    def ends_run(self) -> bool:
        """A failure that will be retried is not the end: the run goes on with another
        attempt."""
        return not self.payload.retrying


class JobCancelled(_Envelope):
    type: Literal["trainer.job.cancelled.v1"] = "trainer.job.cancelled.v1"
    payload: JobCancelledPayload

    @property
    def ends_run(self) -> bool:
        return True


class MetricsConfig(_Envelope):
    type: Literal["trainer.metrics.config.v1"] = "trainer.metrics.config.v1"
    payload: MetricsConfigPayload


class MetricsProgress(_Envelope):
    type: Literal["trainer.metrics.progress.v1"] = "trainer.metrics.progress.v1"
    payload: MetricsProgressPayload


class MetricsEval(_Envelope):
    type: Literal["trainer.metrics.eval.v1"] = "trainer.metrics.eval.v1"
    payload: MetricsEvalPayload


class MetricsCheckpoint(_Envelope):
    type: Literal["trainer.metrics.checkpoint.v1"] = "trainer.metrics.checkpoint.v1"
    payload: MetricsCheckpointPayload


class MetricsCompleted(_Envelope):
    type: Literal["trainer.metrics.completed.v1"] = "trainer.metrics.completed.v1"
    payload: MetricsCompletedPayload


class StudyStarted(_Envelope):
    type: Literal["trainer.study.started.v1"] = "trainer.study.started.v1"
    payload: StudyStartedPayload


class StudyTrialCompleted(_Envelope):
    type: Literal["trainer.study.trial_completed.v1"] = "trainer.study.trial_completed.v1"
    payload: StudyTrialCompletedPayload


class StudyCompleted(_Envelope):
    type: Literal["trainer.study.completed.v1"] = "trainer.study.completed.v1"
    payload: StudyCompletedPayload

    @property
    def ends_run(self) -> bool:
        """A study is a run: its completion (completed, cancelled or failed) ends it."""
        return True


class ModelPromoted(_Envelope):
    """`run_id` is the run whose saved model the version holds."""

    type: Literal["trainer.model.promoted.v1"] = "trainer.model.promoted.v1"
    payload: ModelStageChangedPayload


class ModelRolledBack(_Envelope):
    """`run_id` is the run whose saved model the restored production version holds."""

    type: Literal["trainer.model.rolled_back.v1"] = "trainer.model.rolled_back.v1"
    payload: ModelStageChangedPayload


class ModelRetrained(_Envelope):
    """`run_id` is the retraining run; `user_id` the owner it is told to."""

    type: Literal["trainer.model.retrained.v1"] = "trainer.model.retrained.v1"
    payload: ModelRetrainedPayload


Event = Annotated[
    JobQueued
    | JobStarted
    | JobProgress
    | JobCompleted
    | JobFailed
    | JobCancelled
    | MetricsConfig
    | MetricsProgress
    | MetricsEval
    | MetricsCheckpoint
    | MetricsCompleted
    | StudyStarted
    | StudyTrialCompleted
    | StudyCompleted
    | ModelPromoted
    | ModelRolledBack
    | ModelRetrained,
    Field(discriminator="type"),
]

EVENT_TYPES: tuple[type[_Envelope], ...] = (
    JobQueued,
    JobStarted,
    JobProgress,
    JobCompleted,
    JobFailed,
    JobCancelled,
    MetricsConfig,
    MetricsProgress,
    MetricsEval,
    MetricsCheckpoint,
    MetricsCompleted,
    StudyStarted,
    StudyTrialCompleted,
    StudyCompleted,
    ModelPromoted,
    ModelRolledBack,
    ModelRetrained,
)
REGISTRY_EVENTS = (ModelPromoted, ModelRolledBack)

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
_OBJECT: TypeAdapter[dict[str, object]] = TypeAdapter(dict[str, object])
_KNOWN_TYPES: frozenset[str] = frozenset(
    str(model.model_fields["type"].default) for model in EVENT_TYPES
)
_KNOWN_NAMES: frozenset[str] = frozenset(t.rsplit(".", 1)[0] for t in _KNOWN_TYPES)


def encode_event(event: Event) -> bytes:
    return event.model_dump_json().encode("utf-8")


def decode_event(raw: bytes | str) -> Event:
    """Decode one event; raise EventDecodeError for anything that is not a known event."""
    try:
        return _ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise EventDecodeError(_describe(raw, exc)) from exc


def _describe(raw: bytes | str, exc: ValidationError) -> str:
    """A one-line reason, without the event's values (they may hold user text)."""
    try:
        head = _OBJECT.validate_json(raw)
    except ValidationError as not_object:
        if not_object.errors()[0]["type"] == "json_invalid":
            return "event is not valid JSON"
        return "event is not a JSON object"
    type_name = head.get("type")
    if type_name is None:
        return "event has no 'type' field"
    if not isinstance(type_name, str) or type_name not in _KNOWN_TYPES:
        name = str(type_name).rsplit(".", 1)[0]
        if name in _KNOWN_NAMES:
            return f"unknown version of event type {name!r}: {type_name!r}"
        return f"unknown event type {type_name!r}"
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'][1:])}: {err['msg']}"
        for err in exc.errors(include_input=False, include_url=False)
    )
    return f"invalid {type_name} event: {problems}"
