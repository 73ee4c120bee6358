"""Request and response models of the trainer API, shared by the API (which validates and
answers with them) and the typed client (which sends and parses them). One family per
resource: `*Create` is what a caller sends, `*Public` what the API answers.

Responses are strict (`extra="forbid"`): a field the client does not know means API and
client disagree about the contract, and that should fail loudly in tests, not be dropped.
Error bodies are the exception, see `ErrorBody`. Floats read from artifacts are finite or
None: JSON has no NaN.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from platform_core.events import Event, JobKind, Stage
from platform_core.manifests import (
    BaselineReport,
    DatasetReport,
    EvalPoint,
    ModelVersionMetadata,
    TokenizerStats,
    TrackingRecord,
)
from platform_core.model_registry import RegistryChange
from platform_core.run_state import RunStatus
from platform_core.specs import (
    ID_REGEX,
    SEMVER_REGEX,
    DatasetSpec,
    GenerateRequest,
    GenerateResult,
    JsonRequest,
    PredictRequest,
    PredictResult,
    ScoreRequest,
    ScoreResult,
    TokenizerKind,
    TokenizerSpec,
    TrainRunSpec,
)

STRICT = ConfigDict(extra="forbid", frozen=True)
# a Discord id (snowflake) fits in 63 bits; `< 2**63` rather than `<= 2**63 - 1`: the schema
# publishes bounds as floats, and 2**63 is one exactly (2**63 - 1 is not)
DISCORD_ID_LIMIT = 2**63
ArtifactKind = Literal["tokenizers", "runs"]
# an inference request's record (platform_core.inference_results): no cancellation
InferenceStatus = Literal["queued", "running", "completed", "failed"]


# ---- health ---------------------------------------------------------------------------------


class HealthStatus(BaseModel):
    """GET /healthz: the API process is up."""

    model_config = STRICT

    status: Literal["ok"]


class ReadyStatus(BaseModel):
    """GET /readyz: whether the API can take work (Redis answers, the data root is writable)."""

    model_config = STRICT

    status: Literal["ready", "not_ready"]
    redis: bool  # Redis answered PING
    data_root_writable: bool  # a file could be created and removed under the data root
    queue_depth: int  # jobs waiting in the training queue


class ErrorBody(BaseModel):
    """Body of every error response: `{code, message, request_id}`.

    Unknown fields are ignored here: an older client must still read the code and message of
    an error from a newer API that adds, say, `details`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    code: str  # an ErrorCode value, kept as text so codes added later still parse
    message: str  # safe to show the user
    request_id: str | None = None  # the X-Request-ID the API logged this request under


# ---- submissions ----------------------------------------------------------------------------


class TokenizerCreate(JsonRequest):
    """POST /tokenizers/train: the tokenizer's id is its run id."""

    model_config = STRICT

    spec: TokenizerSpec
    tokenizer_id: str | None = Field(default=None, pattern=ID_REGEX)  # None: tok-<hex>
    # the Discord owner to notify; a Discord id (snowflake) fits in 63 bits
    user_id: Annotated[StrictInt, Field(ge=0, lt=DISCORD_ID_LIMIT)] | None = None


class RunCreate(JsonRequest):
    """POST /runs/train."""

    model_config = STRICT

    spec: TrainRunSpec
    run_id: str | None = Field(default=None, pattern=ID_REGEX)  # None: run-<hex>
    # the Discord owner to notify; a Discord id (snowflake) fits in 63 bits
    user_id: Annotated[StrictInt, Field(ge=0, lt=DISCORD_ID_LIMIT)] | None = None


class JobAccepted(BaseModel):
    """202 answer to a training submission: the job is queued under `run_id`."""

    model_config = STRICT

    run_id: str
    kind: Literal["train_tokenizer", "train_model", "prepare_dataset", "compare_models"]
    status: RunStatus


# ---- tokenizers -----------------------------------------------------------------------------


class TokenizerPublic(BaseModel):
    """GET /tokenizers/{id}: a trained tokenizer, or one whose training is under way."""

    model_config = STRICT

    tokenizer_id: str
    status: RunStatus  # "completed" once its folder holds a manifest
    message: str | None = None
    kind: TokenizerKind | None = None
    vocab_size: int | None = None
    stats: TokenizerStats | None = None  # set once trained
    corpus_source: str | None = None
    corpus_sha256: str | None = None
    created_at: datetime | None = None
    duration_s: float | None = None


class TokenizerList(BaseModel):
    """GET /tokenizers: trained ones and those in training, by id."""

    model_config = STRICT

    items: list[TokenizerPublic]


# ---- classification datasets ----------------------------------------------------------------


class DatasetCreate(JsonRequest):
    """POST /datasets: prepare a classification dataset; its id is its run id."""

    model_config = STRICT

    spec: DatasetSpec = Field(default_factory=DatasetSpec)  # default: the built-in dataset
    dataset_id: str | None = Field(default=None, pattern=ID_REGEX)  # None: ds-<hex>
    # the Discord owner to notify; a Discord id (snowflake) fits in 63 bits
    user_id: Annotated[StrictInt, Field(ge=0, lt=DISCORD_ID_LIMIT)] | None = None


class DatasetPublic(BaseModel):
    """GET /datasets/{id}: a prepared dataset (report, baseline), or its preparation's
    status."""

    model_config = STRICT

    dataset_id: str
    status: RunStatus  # "completed" once its folder holds a manifest
    message: str | None = None
    source: str | None = None
    report: DatasetReport | None = None  # set once prepared
    baseline: BaselineReport | None = None
    created_at: datetime | None = None
    duration_s: float | None = None


class DatasetList(BaseModel):
    """GET /datasets: prepared datasets and those being prepared, by id."""

    model_config = STRICT

    items: list[DatasetPublic]


# ---- model registry ---------------------------------------------------------------------------

Actor = Field(default="api", min_length=1, max_length=100)  # who asked: a Discord id, a name
Reason = Field(default="", max_length=1000)  # why, for the history


class ModelVersionCreate(JsonRequest):
    """POST /models/{name}/versions: register a run's saved transformers model."""

    model_config = STRICT

    source_run: str = Field(pattern=ID_REGEX)  # its runs/<id>/model/ holds the model
    version: str | None = Field(default=None, pattern=SEMVER_REGEX)  # None: next minor
    dataset_id: str | None = Field(default=None, pattern=ID_REGEX)  # recorded with its report
    actor: str = Actor
    reason: str = Reason


class PromoteRequest(JsonRequest):
    """POST /models/{name}/versions/{version}/promote."""

    model_config = STRICT

    stage: Stage = "production"
    actor: str = Actor
    reason: str = Reason


class RollbackRequest(JsonRequest):
    """POST /models/{name}/rollback: production goes back to the version it replaced."""

    model_config = STRICT

    actor: str = Actor
    reason: str = Reason


class ModelVersionPublic(BaseModel):
    model_config = STRICT

    name: str
    version: str
    stage: Stage
    metadata: ModelVersionMetadata | None  # None when its folder is unreadable


class ModelVersionList(BaseModel):
    """GET /models/{name}/versions: oldest version first, and the history of changes."""

    model_config = STRICT

    name: str
    production: str | None
    items: list[ModelVersionPublic]
    history: list[RegistryChange]


class RegisteredModel(BaseModel):
    model_config = STRICT

    name: str
    production: str | None
    versions: int


class ModelList(BaseModel):
    """GET /models: every registered name."""

    model_config = STRICT

    items: list[RegisteredModel]


# ---- runs -----------------------------------------------------------------------------------


class RunProgress(BaseModel):
    """The worker's latest progress figures."""

    model_config = STRICT

    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    fraction: float | None = None  # 0..1
    eta_s: float | None = None
    loss: float | None = None
    tokens_per_s: float | None = None
    last_checkpoint_step: int | None = None  # the newest checkpoint written, once there is one


class RunMetrics(BaseModel):
    """Summary of a finished model run, from its manifest."""

    model_config = STRICT

    steps: int | None = None
    final_loss: float | None = None
    best_eval_loss: float | None = None
    first_perplexity: float | None = None
    final_perplexity: float | None = None
    tokens_per_s: float | None = None
    duration_s: float | None = None  # wall time of the whole job
    stop_reason: str | None = None


class RunPublic(BaseModel):
    """GET /runs/{id}: live state from Redis; for a finished run, metrics from its manifest."""

    model_config = STRICT

    run_id: str
    kind: JobKind | None = None
    status: RunStatus
    message: str | None = None
    user_id: int | None = None
    created_at: float | None = None  # UNIX seconds
    last_heartbeat: float | None = None  # UNIX seconds
    heartbeat_age_s: float | None = None  # seconds since the last heartbeat, when one was seen
    eta_s: float | None = None
    progress: RunProgress | None = None
    metrics: RunMetrics | None = None
    # its MLflow run (id, UI link; once it ended, whether MLflow got every metric), as the
    # worker recorded it in the run folder; None when tracking is off or has not begun
    tracking: TrackingRecord | None = None


class RunQuery(BaseModel):
    """GET /runs query: filters (each optional) and paging."""

    model_config = STRICT

    status: RunStatus | None = None
    kind: JobKind | None = None
    # runs this Discord owner asked for (a Discord id fits in 63 bits)
    user_id: int | None = Field(default=None, ge=0, lt=DISCORD_ID_LIMIT)
    limit: int = Field(default=20, ge=1, le=100)
    # past any listing Redis can hold, and small enough for Redis' 64-bit ranges
    offset: int = Field(default=0, ge=0, le=2**31)


class RunList(BaseModel):
    """GET /runs: newest first."""

    model_config = STRICT

    items: list[RunPublic]
    total: int  # runs that match the filters, before paging
    limit: int
    offset: int


class CancelResult(BaseModel):
    """POST /runs/{id}/cancel: a queued run is cancelled at once, a running one is asked to
    stop at its next step (it then keeps a final checkpoint)."""

    model_config = STRICT

    run_id: str
    outcome: Literal["cancelled", "requested"]


# ---- logs -----------------------------------------------------------------------------------


class LogLine(BaseModel):
    """One line of a run's logs.jsonl; a line that is not JSON keeps its text in `message`."""

    model_config = STRICT

    message: str
    timestamp: str | None = None
    level: str | None = None
    logger: str | None = None
    event: str | None = None
    step: int | None = None
    loss: float | None = None
    error_code: str | None = None


class RunLogs(BaseModel):
    """GET /runs/{id}/logs: the last lines, oldest first."""

    model_config = STRICT

    run_id: str
    lines: list[LogLine]


# ---- inference and evaluation ---------------------------------------------------------------


class EvaluateRequest(JsonRequest):
    """POST /runs/{id}/evaluate: the run's own holdout; no parameters yet."""

    model_config = STRICT


class InferenceAccepted(BaseModel):
    """202 answer to generate / score / evaluate / predict: poll with `request_id`."""

    model_config = STRICT

    request_id: str
    run_id: str
    kind: Literal["generate", "score", "evaluate", "predict"]
    status: InferenceStatus


class InferenceFailure(BaseModel):
    model_config = STRICT

    code: str  # an ErrorCode value
    message: str


class EvaluationResult(BaseModel):
    """Loss and perplexity of a run's model on its whole holdout."""

    model_config = STRICT

    eval_loss: float | None
    perplexity: float | None
    tokens: int
    corpus_sha256: str
    evaluated_at: float  # UNIX seconds


class _InferenceRecord(BaseModel):
    model_config = STRICT

    request_id: str
    run_id: str
    status: InferenceStatus
    error: InferenceFailure | None = None
    created_at: float
    finished_at: float | None = None


class GenerateRecord(_InferenceRecord):
    """GET /runs/{id}/generate/{request_id}."""

    request: GenerateRequest
    result: GenerateResult | None = None


class ScoreRecord(_InferenceRecord):
    """GET /runs/{id}/score/{request_id}."""

    request: ScoreRequest
    result: ScoreResult | None = None


class PredictRecord(_InferenceRecord):
    """GET /runs/{id}/predict/{request_id}."""

    request: PredictRequest
    result: PredictResult | None = None


class EvaluateRecord(_InferenceRecord):
    """An evaluate request, in GET /runs/{id}/eval?request_id=..."""

    request: EvaluateRequest
    result: EvaluationResult | None = None


class EvalSample(BaseModel):
    """Text the model wrote from a fixed prompt at the end of training."""

    model_config = STRICT

    prompt: str
    output: str
    seed: int | None = None


class RunEval(BaseModel):
    """GET /runs/{id}/eval: the training's eval history and samples, and every evaluation
    asked for since."""

    model_config = STRICT

    run_id: str
    history: list[EvalPoint]  # evaluations during training (empty until it finished)
    best_eval_loss: float | None = None
    final_perplexity: float | None = None
    samples: list[EvalSample]
    evaluations: list[EvaluationResult]  # POST /runs/{id}/evaluate results, oldest first
    request: EvaluateRecord | None = None  # the request named by ?request_id=


# ---- a run's recent events ------------------------------------------------------------------


class RecentEvent(BaseModel):
    model_config = STRICT

    id: str  # the entry's id in the event stream
    event: Event


class RecentEvents(BaseModel):
    """GET /runs/{id}/events/recent: the run's newest events of the asked types, oldest
    first. `read_at` is the stream's newest entry when they were read: everything of the run
    up to it was looked at, what follows it is new (a watcher's live updates start there)."""

    model_config = STRICT

    items: list[RecentEvent]
    read_at: str
