"""The manifests the worker writes and every other process reads: a run's
`runs/<id>/manifest.json`, a tokenizer's `tokenizers/<id>/manifest.json` and a prepared
dataset's `datasets/<id>/manifest.json`.

Each is a frozen, versioned pydantic model declared here once. Writing is atomic (a unique
temporary file beside the target, flushed to disk, renamed over it; the temporary file is
removed on every failure), so a reader sees the old manifest or the new one, never half of
one. Reading goes through one function per manifest that either returns the whole model or
raises one typed error: DATA_NOT_FOUND when the file is missing, DATA_INVALID when it is not
a manifest of a version this release reads. A manifest written before versions existed (no
`schema_version`) is read as version 1, which has the same fields.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Final, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, ValidationError

from platform_core.errors import AppError, ErrorCode, FailureClass
from platform_core.events import JobKind
from platform_core.paths import open_regular
from platform_core.run_state import RunStatus
from platform_core.specs import DatasetSpec, TokenizerKind, TokenizerSpec, TrainRunSpec

RUN_SCHEMA_VERSION: Final = 2
TOKENIZER_SCHEMA_VERSION: Final = 1
DATASET_SCHEMA_VERSION: Final = 1
ManifestT = TypeVar("ManifestT", bound=BaseModel)


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: a diverged loss is recorded as null."""
    return value if value is None or math.isfinite(value) else None


Finite = Annotated[float | None, AfterValidator(_finite)]
_FROZEN = ConfigDict(extra="forbid", frozen=True)


# ---- tokenizers -------------------------------------------------------------------------------


class TokenizerStats(BaseModel):
    """Quality of a trained tokenizer on its corpus' holdout."""

    model_config = _FROZEN

    coverage: float  # share of holdout characters that encode without <unk> and round-trip
    oov_rate: float  # share of holdout words whose encoding contains <unk>
    tokens_per_char: float  # holdout tokens / holdout characters
    tokens_per_word: float  # holdout tokens / holdout whitespace-separated words
    num_holdout_chars: int  # characters (code points) in the holdout text
    num_holdout_tokens: int  # tokens the whole holdout text encodes to


class CorpusRecord(BaseModel):
    """Which corpus an artifact was made from: the same digest means the same input."""

    model_config = _FROZEN

    source: str  # relative path under the data root, or "demo:pydoc_data.topics"
    sha256: str  # of the raw corpus bytes
    num_documents: int | None = None
    num_train_documents: int | None = None
    num_holdout_documents: int | None = None


class TokenizerManifest(BaseModel):
    """`tokenizers/<id>/manifest.json`."""

    model_config = _FROZEN

    format_version: Literal[1] = TOKENIZER_SCHEMA_VERSION
    id: str
    kind: TokenizerKind
    spec: TokenizerSpec  # the request as validated
    config: dict[str, JsonValue]  # the backend config it resolved to
    corpus: CorpusRecord
    stats: TokenizerStats  # on the holdout split
    vocab_size: int
    eos_id: int | None
    pad_id: int | None
    unk_id: int | None
    files: list[str]  # the backend's files beside this manifest
    library_versions: dict[str, str]
    created_at: datetime
    duration_s: float  # corpus loading + training + statistics


# ---- runs -------------------------------------------------------------------------------------


class TokenizerRef(BaseModel):
    model_config = _FROZEN

    id: str
    vocab_size: int


class HostInfo(BaseModel):
    model_config = _FROZEN

    python: str
    machine: str
    cpus: int


class EvalPoint(BaseModel):
    """One evaluation of the run's holdout (`eval/history.jsonl`, the summary, the API)."""

    model_config = _FROZEN

    step: int
    eval_loss: Finite = None
    perplexity: Finite = None
    # a task's named metrics at this eval (e.g. "val/criteria_matcher/f1"); none for an LM
    metrics: dict[str, float] = {}


class MetricsSummary(BaseModel):
    """`eval/metrics.json` and the manifest's `metrics`: evals cover every attempt."""

    model_config = _FROZEN

    steps: int
    final_loss: Finite = None
    best_eval_loss: Finite = None
    first_perplexity: Finite = None
    final_perplexity: Finite = None
    final_eval_loss: Finite = None
    tokens_per_s: Finite = None
    eval_history: list[EvalPoint] = []


class DualAgentRecord(BaseModel):
    """What a dual-agent run learned beyond its losses: the decision thresholds tuned on
    validation, the data report, and the model's test metrics beside the keyword
    baseline's on the same test split (`eval/dual_agent.json` holds the same)."""

    model_config = _FROZEN

    criteria: list[str]  # the criteria head's order
    criteria_head: Literal["sigmoid", "softmax"]
    thresholds: dict[str, float]  # criterion -> probability at or above which it matches
    data_report: dict[str, dict[str, int]]  # split -> criterion (or NO_CRITERION, POSTS) -> posts
    val_metrics: dict[str, float]  # with the tuned thresholds
    test_metrics: dict[str, float]  # empty when the data has no test split
    baseline_test_metrics: dict[str, float]


class RunDurations(BaseModel):
    model_config = _FROZEN

    total: float
    training: float


class RunFailure(BaseModel):
    """Why the run failed, as its job's failure event said."""

    model_config = _FROZEN

    error_code: ErrorCode
    failure_class: FailureClass
    message: str
    attempt: int


class TrackingRecord(BaseModel):
    """A run's MLflow run: `runs/<id>/tracking/mlflow.json` from the moment MLflow created it
    (so a resumed attempt continues the same MLflow run), copied into the manifest's
    `tracking` when the run ends. Read by the API and the CLI without MLflow."""

    model_config = _FROZEN

    # None only in a manifest whose run never reached MLflow
    mlflow_run_id: str | None = Field(default=None, min_length=1, max_length=64)
    experiment_id: str | None = Field(default=None, min_length=1, max_length=64)
    ui_url: str | None = Field(default=None, max_length=4_096)  # the run's page in MLflow's UI
    # None while the run trains; at its end whether MLflow confirmed every metric
    synced: bool | None = None
    # metrics still held in runs/<id>/tracking/buffer.jsonl when the run ended
    pending_metrics: int = Field(default=0, ge=0)


class RunManifest(BaseModel):
    """`runs/<id>/manifest.json`: the source of truth of a run once it has a folder.

    Written when the run starts (status running) and replaced when it ends; the resolved
    spec, seed, device and library versions make the run reproducible."""

    model_config = _FROZEN

    schema_version: Literal[2] = RUN_SCHEMA_VERSION
    run_id: str
    kind: JobKind
    status: RunStatus
    user_id: int | None = None  # the Discord owner that asked, notified of the run's events
    spec: dict[str, JsonValue]  # the kind's spec as validated (e.g. a TrainRunSpec)
    seed: int | None = None
    device: str | None = None
    precision: str | None = None
    num_params: int | None = None
    corpus: CorpusRecord | None = None
    tokenizer: TokenizerRef | None = None
    library_versions: dict[str, str] = {}
    host: HostInfo | None = None
    started_at: datetime
    attempt: int = Field(default=1, ge=1)
    resumed_from_step: int | None = None
    stop_reason: str | None = None
    finished_at: datetime | None = None
    durations_s: RunDurations | None = None
    metrics: MetricsSummary | None = None
    artifacts: list[str] = []  # files of the run folder, relative to it
    model_files: dict[str, str] = {}  # final model files (relative to the run) -> SHA-256
    failure: RunFailure | None = None
    tracking: TrackingRecord | None = None  # its MLflow run, recorded when the run ends
    dual_agent: DualAgentRecord | None = None  # dual_agent model runs only
    classifier: ClassifierRecord | None = None  # classifier model runs only

    def train_spec(self) -> TrainRunSpec:
        """The spec of a model run; DATA_INVALID for another kind or a spec that no longer
        validates."""
        if self.kind != "train_model":
            raise AppError(ErrorCode.DATA_INVALID, f"run {self.run_id} is a {self.kind} run")
        try:
            return TrainRunSpec.model_validate(self.spec)
        except ValidationError as exc:
            raise AppError(
                ErrorCode.DATA_INVALID, f"run {self.run_id}'s manifest holds an invalid spec"
            ) from exc


# ---- classification datasets -----------------------------------------------------------------

SplitName = Literal["train", "val", "test"]
SPLITS: Final[tuple[SplitName, ...]] = ("train", "val", "test")


class ClassMetrics(BaseModel):
    """One class's precision, recall and F1 on an evaluated split."""

    model_config = _FROZEN

    precision: float
    recall: float
    f1: float
    support: int  # rows of the class in the split


class ClassificationMetrics(BaseModel):
    """A classifier's quality on one labelled split (the baseline's, a model's, an A/B's)."""

    model_config = _FROZEN

    num_examples: int
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassMetrics]


class BaselineReport(BaseModel):
    """`datasets/<id>/eval/baseline.json`: TF-IDF + logistic regression on the dataset's split,
    beside where a classifier's metrics go (`eval/`)."""

    model_config = _FROZEN

    model: Literal["tfidf_logreg"] = "tfidf_logreg"
    params: dict[str, JsonValue]
    val: ClassificationMetrics
    test: ClassificationMetrics
    train_s: float


class LatencyReport(BaseModel):
    """Single-text CPU inference (tokenise + forward), after warm-up passes."""

    model_config = _FROZEN

    p50_ms: float
    p95_ms: float
    samples: int
    threads: int  # torch's intra-op threads while timing


class QuantizedReport(BaseModel):
    """The dynamic int8 copy (Linear layers) of a classifier, on the same test split."""

    model_config = _FROZEN

    test: ClassificationMetrics
    accuracy_delta: float  # int8 accuracy - fp32 accuracy
    latency: LatencyReport
    speedup: float  # fp32 p50 / int8 p50
    size_bytes: int  # the int8 state dict, serialised


class ClassifierRecord(BaseModel):
    """What a classifier run measured on its dataset's test split, beside the TF-IDF
    baseline's figures stored with the dataset (`eval/classifier.json` holds the same)."""

    model_config = _FROZEN

    dataset_id: str
    labels: list[str]  # the head's order (config.id2label)
    best_step: int | None  # the step whose weights were kept (best validation accuracy)
    best_val_accuracy: float | None
    test: ClassificationMetrics
    baseline_test: ClassificationMetrics | None  # None: the dataset has no baseline
    confusion: list[list[int]]  # [true label][predicted label], in `labels` order
    latency: LatencyReport
    size_bytes: int  # the model's parameters (fp32 bytes; the safetensors file adds its header)
    quantized: QuantizedReport | None = None  # None: quantisation not asked for


class DatasetReport(BaseModel):
    """What preparation did: rows in and out, why rows went, the classes and the split."""

    model_config = _FROZEN

    rows_read: int
    rows_kept: int
    duplicates_by_id: int
    duplicates_by_text: int  # same text once normalised (case, punctuation, spacing)
    filtered_empty: int  # nothing left after cleaning
    filtered_too_short: int  # fewer than min_words words after cleaning
    labels: list[str]  # sorted; a classifier's label ids follow this order
    class_counts: dict[str, int]
    split_counts: dict[SplitName, dict[str, int]]
    imbalance_ratio: float  # rows of the largest class / rows of the smallest
    seed: int


class DatasetManifest(BaseModel):
    """`datasets/<id>/manifest.json`: a prepared dataset (the folder appears whole)."""

    model_config = _FROZEN

    format_version: Literal[1] = DATASET_SCHEMA_VERSION
    id: str
    spec: DatasetSpec  # the request as validated
    source: str  # where the rows came from, in words ("builtin:botocore 1.44.8", a path, ...)
    report: DatasetReport
    baseline: BaselineReport | None = None
    files: dict[str, str]  # files beside this manifest -> SHA-256
    library_versions: dict[str, str]
    created_at: datetime
    duration_s: float


# ---- model registry --------------------------------------------------------------------------


class DatasetRef(BaseModel):
    """The dataset a registered version was trained and measured on."""

    model_config = _FROZEN

    id: str
    source: str
    report: DatasetReport


class ModelVersionMetadata(BaseModel):
    """`models/<name>/<version>/metadata.json`, beside files `from_pretrained` loads as is."""

    model_config = _FROZEN

    format_version: Literal[1] = 1
    name: str
    version: str  # semantic version, MAJOR.MINOR.PATCH
    source_run: str  # the run whose saved model this is
    dataset: DatasetRef | None = None
    hyperparameters: dict[str, JsonValue] = {}  # the source run's spec, as it ran
    metrics: dict[str, JsonValue] = {}  # the source run's metrics (a classifier's test report)
    size_bytes: int  # of the model files
    files: dict[str, str]  # model files -> SHA-256
    git_commit: str | None = None  # of the code that registered it, when known
    created_at: datetime


def read_model_metadata(path: Path) -> ModelVersionMetadata:
    """A version's metadata.json, whole; DATA_NOT_FOUND or DATA_INVALID otherwise."""
    return _validate(path, _read_object(path), ModelVersionMetadata)


# ---- reading and writing ----------------------------------------------------------------------


def read_run_manifest(path: Path) -> RunManifest:
    """The run manifest at `path`, whole; DATA_NOT_FOUND or DATA_INVALID otherwise."""
    raw = _read_object(path)
    raw.setdefault("schema_version", 1)
    version = raw["schema_version"]
    if version == 1:  # before versions: the same fields
        raw["schema_version"] = RUN_SCHEMA_VERSION
    elif version != RUN_SCHEMA_VERSION:
        raise AppError(
            ErrorCode.DATA_INVALID,
            f"run manifest {path.name} has schema version {version!r}; this release reads "
            f"versions 1 to {RUN_SCHEMA_VERSION} (was it written by a newer release?)",
        )
    return _validate(path, raw, RunManifest)


def read_metrics_summary(path: Path) -> MetricsSummary:
    """A run's `eval/metrics.json`; DATA_NOT_FOUND or DATA_INVALID otherwise."""
    return _validate(path, _read_object(path), MetricsSummary)


def read_tracking_record(path: Path) -> TrackingRecord:
    """A run's `tracking/mlflow.json`; DATA_NOT_FOUND or DATA_INVALID otherwise."""
    return _validate(path, _read_object(path), TrackingRecord)


def read_tokenizer_manifest(path: Path) -> TokenizerManifest:
    """The tokenizer manifest at `path`, whole; DATA_NOT_FOUND or DATA_INVALID otherwise."""
    return _validate(path, _read_object(path), TokenizerManifest)


def read_dataset_manifest(path: Path) -> DatasetManifest:
    """The dataset manifest at `path`, whole; DATA_NOT_FOUND or DATA_INVALID otherwise."""
    return _validate(path, _read_object(path), DatasetManifest)


def write_manifest(path: Path, manifest: BaseModel) -> None:
    """Replace `path` with `manifest` atomically (see the module docstring); a failed
    write is a typed storage error (`storage_error`)."""
    data = manifest.model_dump_json(indent=2).encode("utf-8")
    write_atomic(path, data)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a unique temporary sibling and a rename; the
    temporary file never outlives a failure."""
    descriptor, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        _remove_quietly(tmp_name)
        raise storage_error(exc, f"writing {path.name}") from exc
    except BaseException:
        _remove_quietly(tmp_name)
        raise


def storage_error(exc: OSError, doing: str) -> AppError:
    """An OSError while writing as the typed storage failure it is: a full disk (or quota)
    is STORAGE_FULL, anything else STORAGE_ERROR, never INTERNAL."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return AppError(ErrorCode.STORAGE_FULL, f"{doing}: no space left on the device")
    return AppError(ErrorCode.STORAGE_ERROR, f"{doing}: {exc.strerror or type(exc).__name__}")


def _remove_quietly(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name)


def _read_object(path: Path) -> dict[str, object]:
    try:
        with open_regular(path) as handle:  # never through a link
            text = handle.read()
    except FileNotFoundError as exc:
        raise AppError(ErrorCode.DATA_NOT_FOUND, f"no manifest at {path.name}") from exc
    except OSError as exc:
        raise AppError(ErrorCode.DATA_INVALID, f"manifest {path.name} cannot be read") from exc
    try:
        raw: object = json.loads(text)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise AppError(ErrorCode.DATA_INVALID, f"manifest {path.name} is not JSON") from exc
    if not isinstance(raw, dict):
        raise AppError(ErrorCode.DATA_INVALID, f"manifest {path.name} is not a JSON object")
    return raw


def _validate(path: Path, raw: dict[str, object], model: type[ManifestT]) -> ManifestT:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)[:5]
        )
        raise AppError(
            ErrorCode.DATA_INVALID, f"manifest {path.name} is not valid: {problems}"
        ) from exc
