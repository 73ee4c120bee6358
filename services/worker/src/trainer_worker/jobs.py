"""RQ jobs: plain top-level functions taking ids and a JSON-safe spec, returning a small dict.

Each one resolves its Redis connection (the worker's) and data root, then hands its body to
`run_job`, which owns the lifecycle: status, heartbeats, events and failure classification;
RQ retries a transient failure (the job's `Retry`) while the job has attempts left.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import redis
from pydantic import ValidationError
from rq import get_current_job
from rq.job import Job

from platform_core.ab_serving import record_served, served_model
from platform_core.errors import AppError, ErrorCode, invalid_input
from platform_core.event_bus import EventBus
from platform_core.events import JobKind
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.manifests import read_dataset_manifest
from platform_core.retraining import growth_retrains
from platform_core.settings import Settings, load_settings
from platform_core.specs import TokenizerSpec
from trainer_worker.classify.dataset_job import prepare_dataset_body
from trainer_worker.classify.predict import classifier_predict_work, registered_predict_work
from trainer_worker.dual_agent.predict import predict_work
from trainer_worker.families import train_run_body
from trainer_worker.family_run import resume_hint
from trainer_worker.inference_jobs import (
    answer_request,
    evaluate_work,
    generate_work,
    read_model_run,
    run_inference,
    score_work,
)
from trainer_worker.job_context import Body, JobContext, Outcome, ResumeHint, run_job
from trainer_worker.model_run import parse_spec
from trainer_worker.tokenizers.artifacts import train_tokenizer_artifact
from trainer_worker.tracking.registry_mirror import mirror_pending

_log = logging.getLogger(__name__)


def train_tokenizer(run_id: str, spec: JsonObject, *, user_id: int | None = None) -> JsonObject:
    """Train a tokenizer whose id is the run id; artifacts in `tokenizers/<run_id>/`."""

    def body(context: JobContext) -> Outcome:
        try:
            parsed = TokenizerSpec.model_validate(spec)
        except ValidationError as exc:
            raise invalid_input(exc, what="tokenizer spec") from exc
        context.progress(step=0, total_steps=1, epoch=0, eta_s=None, message="training tokenizer")
        manifest = train_tokenizer_artifact(run_id, parsed, context.layout.root)
        context.progress(step=1, total_steps=1, epoch=1, eta_s=0, message="tokenizer trained")
        stats = manifest.stats
        return Outcome(
            result={
                "tokenizer_id": run_id,
                "vocab_size": manifest.vocab_size,
                "coverage": stats.coverage,
                "oov_rate": stats.oov_rate,
                "tokens_per_char": stats.tokens_per_char,
            },
            message=(
                f"{parsed.kind} tokenizer, vocab {manifest.vocab_size}, "
                f"coverage {stats.coverage:.4f}, {stats.tokens_per_word:.2f} tokens/word"
            ),
            artifact_dir=context.layout.relative(context.layout.tokenizer_dir(run_id)),
        )

    return lifecycle("train_tokenizer", run_id, body, user_id=user_id)


def train_model(run_id: str, spec: JsonObject, *, user_id: int | None = None) -> JsonObject:
    """Train a model (GPT-2 or Char-LSTM on a trained tokenizer, a dual-agent model on
    ReDSM5-format posts, or a text classifier on a prepared dataset); artifacts in
    `runs/<run_id>/`."""

    def body(context: JobContext) -> Outcome:
        return train_run_body(parse_spec(spec), context)

    return lifecycle("train_model", run_id, body, user_id=user_id, resume_hint=resume_hint)


def prepare_dataset(run_id: str, spec: JsonObject, *, user_id: int | None = None) -> JsonObject:
    """Collect, clean, dedup, filter and split a classification dataset (and fit its
    baseline); the dataset's id is the run id, its folder `datasets/<run_id>/`."""
    settings = load_settings()

    def body(context: JobContext) -> Outcome:
        outcome = prepare_dataset_body(spec, context, settings.classify)
        if outcome.cancelled_at_step is None:
            _retrain_on_growth(
                context, EventBus.from_settings(context.store.client, settings.redis)
            )
        return outcome

    return lifecycle("prepare_dataset", run_id, body, user_id=user_id, settings=settings)


def _retrain_on_growth(context: JobContext, bus: EventBus) -> list[str]:
    """The data-growth trigger, once the dataset `context.run_id` is prepared. A check that
    fails is logged: the dataset stands either way."""
    try:
        manifest = read_dataset_manifest(context.layout.dataset_manifest(context.run_id))
        return growth_retrains(bus.client, context.layout, manifest, bus=bus)
    except (AppError, redis.RedisError):
        _log.exception("data-growth check failed", extra={"event": "retrain.growth_unchecked"})
        return []


def generate(request_id: str, spec: JsonObject) -> JsonObject:
    """Generate text from a run's model; the answer goes to the inference result cache."""
    return run_inference(
        "generate", request_id, spec, generate_work, client=_connection(), data_root=_data_root()
    )


def score(request_id: str, spec: JsonObject) -> JsonObject:
    """Score a text with a run's model (loss, perplexity, per-token surprisal)."""
    return run_inference(
        "score", request_id, spec, score_work, client=_connection(), data_root=_data_root()
    )


def evaluate(request_id: str, spec: JsonObject) -> JsonObject:
    """Evaluate a run's model on its holdout; appended to `eval/evaluations.jsonl`."""
    return run_inference(
        "evaluate", request_id, spec, evaluate_work, client=_connection(), data_root=_data_root()
    )


def predict(request_id: str, spec: JsonObject) -> JsonObject:
    """Label texts with a classifying run (dual-agent: criteria + evidence; classifier:
    labels with probabilities), or with a registered classifier version that A/B serving
    chose (then each prediction's label and latency go into the model's A/B log); answers
    into the cache."""
    client, data_root = _connection(), _data_root()
    model = served_model(spec)
    if model is None:
        return answer_request(
            "predict", request_id, predict_run_work, client=client, data_root=data_root
        )
    started = time.perf_counter()
    work = functools.partial(registered_predict_work, model)
    answer = answer_request("predict", request_id, work, client=client, data_root=data_root)
    record_served(client, model[0], request_id, latency_ms=(time.perf_counter() - started) * 1000)
    return answer


def predict_run_work(data_root: Path, run_id: str, request: JsonObject) -> JsonObject:
    """The run's family answers: a classifier run here, any other the dual-agent predictor
    (which refuses a language model)."""
    _, spec = read_model_run(DataLayout(data_root), run_id)
    if spec.model.family == "classifier":
        return classifier_predict_work(data_root, run_id, request)
    return predict_work(data_root, run_id, request)


def mirror_registry() -> JsonObject:
    """Mirror every registry name changed since the last mirror to MLflow's model registry
    (when tracking is on); raises, so RQ retries, while MLflow does not answer."""
    settings = load_settings()
    result = mirror_pending(
        _connection(), DataLayout(settings.data_root.resolve()), settings.tracking
    )
    if result["failed"]:
        raise AppError(
            ErrorCode.TRACKING_UNAVAILABLE,
            f"MLflow did not take the registry of {', '.join(result['failed'])}; kept pending",
        )
    return {"mirrored": list(result["mirrored"])}


def lifecycle(
    kind: JobKind,
    run_id: str,
    body: Body,
    *,
    user_id: int | None,
    resume_hint: ResumeHint | None = None,
    settings: Settings | None = None,
) -> JsonObject:
    """`run_job` with the worker's Redis connection and the configured data root
    (`settings`: already loaded by the caller, else loaded here)."""
    settings = settings or load_settings()
    job = current_job()
    return run_job(
        kind,
        run_id,
        body,
        bus=EventBus.from_settings(job.connection, settings.redis),
        layout=DataLayout(settings.data_root.resolve()),
        user_id=user_id,
        can_retry=bool(job.retries_left),
        resume_hint=resume_hint,
        tracking=settings.tracking,
    )


def current_job() -> Job:
    job = get_current_job()
    if job is None:
        raise AppError(ErrorCode.INTERNAL, "jobs run inside an RQ worker (trainctl worker)")
    return job


def _connection() -> redis.Redis:
    return current_job().connection


def _data_root() -> Path:
    return load_settings().data_root.resolve()
