"""The jobs of the offline comparison and of retraining (queued by `platform_core.retraining`),
the scheduler's tick, and the data-growth check run after a dataset is prepared.

- `compare_models`: a run (`cmp-<hex>`) that compares two registered versions
  (`comparison.compare_versions`); its result is the decision.
- `retrain_model`: the last link of a retraining chain. Its training run ended before it
  started; it registers the trained model in staging, compares it with the production version
  on the new dataset's test split, promotes it when `ab_test.decide` says PROMOTE (the
  policy's threshold) and keeps production otherwise (the candidate stays in staging), then
  publishes `trainer.model.retrained.v1` to the owner either way. A training run that did not
  complete fails this run with the reason (the owner gets that failure instead).
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError

from platform_core.errors import AppError, ErrorCode, invalid_input
from platform_core.event_bus import EventBus
from platform_core.events import ModelRetrained, ModelRetrainedPayload
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.model_registry import ModelRegistry
from platform_core.retrain_specs import REPORT_FILE, CompareSpec, RetrainSpec
from platform_core.retraining import release_lock, scheduled_retrains
from platform_core.run_state import RunStatus
from platform_core.settings import load_settings
from trainer_worker.classify.comparison import ComparisonReport, compare_versions, comparison_dir
from trainer_worker.job_context import JobContext, Outcome
from trainer_worker.jobs import current_job, lifecycle

SpecT = TypeVar("SpecT", CompareSpec, RetrainSpec)


def compare_models(run_id: str, spec: JsonObject, *, user_id: int | None = None) -> JsonObject:
    """Compare two registered versions on one labelled test split; report in
    `models/<name>/comparisons/<run_id>/`."""

    def body(context: JobContext) -> Outcome:
        parsed = _parse(CompareSpec, spec)
        context.progress(step=0, total_steps=1, epoch=0, eta_s=None, message="comparing")
        report = compare_versions(context.layout, parsed, run_id)
        return _compared(context, report)

    return lifecycle("compare_models", run_id, body, user_id=user_id)


def retrain_model(run_id: str, spec: JsonObject, *, user_id: int | None = None) -> JsonObject:
    """Register the chain's trained model, compare it with production, promote or keep, and
    tell the owner."""
    settings = load_settings()
    bus = EventBus.from_settings(current_job().connection, settings.redis)

    def body(context: JobContext) -> Outcome:
        parsed = _parse(RetrainSpec, spec)
        try:
            return retrain_body(parsed, context, bus)
        finally:  # the model is free for the next retraining, whatever this one's outcome
            release_lock(bus.client, parsed.name, run_id)

    return lifecycle("retrain_model", run_id, body, user_id=user_id, settings=settings)


def retrain_body(spec: RetrainSpec, context: JobContext, bus: EventBus) -> Outcome:
    store, layout = context.store, context.layout
    trained = store.status(spec.train_run)
    if trained is not RunStatus.COMPLETED:
        raise AppError(
            ErrorCode.TRAINING_FAILED,
            f"training run {spec.train_run} ended {trained.value if trained else 'unknown'}: "
            f"{store.message(spec.train_run) or 'no message'}; {spec.name} stays at "
            f"{spec.production_version}",
        )
    registry = ModelRegistry(store.client, layout, bus=bus)
    why = f"retraining {context.run_id} ({spec.trigger}) on {spec.dataset_id}"
    candidate = registry.register(
        spec.name, None, source_run=spec.train_run, dataset_id=None, actor=spec.actor, reason=why
    )
    context.progress(
        step=1, total_steps=2, epoch=0, eta_s=None, message=f"comparing {candidate.version}"
    )
    compared = CompareSpec(
        name=spec.name,
        current=spec.production_version,
        candidate=candidate.version,
        dataset_id=spec.dataset_id,
        min_accuracy_gain=spec.min_accuracy_gain,
        alpha=spec.alpha,
    )
    report = compare_versions(layout, compared, context.run_id)
    decision = report.decision
    if decision.decision == "PROMOTE":
        registry.promote(
            spec.name, candidate.version, "production", actor=spec.actor, reason=decision.reason
        )
    payload = ModelRetrainedPayload(
        name=spec.name,
        trigger=spec.trigger,
        decision=decision.decision,
        reason=decision.reason,
        production_version=spec.production_version,
        candidate_version=candidate.version,
        dataset_id=spec.dataset_id,
        current_accuracy=decision.current_accuracy,
        candidate_accuracy=decision.candidate_accuracy,
        p_value=decision.mcnemar.p_value,
        report=layout.relative(comparison_dir(layout, spec.name, context.run_id) / REPORT_FILE),
    )
    context.publish(ModelRetrained(run_id=context.run_id, user_id=context.user_id, payload=payload))
    return _compared(context, report)


def _compared(context: JobContext, report: ComparisonReport) -> Outcome:
    d = report.decision
    return Outcome(
        result={
            "decision": d.decision,
            "current": report.current,
            "candidate": report.candidate,
            "accuracy_gain": d.accuracy_gain,
            "p_value": d.mcnemar.p_value,
        },
        message=f"{d.decision} {report.name} {report.candidate} over {report.current}: {d.reason}",
        artifact_dir=context.layout.relative(
            comparison_dir(context.layout, report.name, context.run_id)
        ),
    )


def _parse(model: type[SpecT], spec: JsonObject) -> SpecT:
    try:
        return model.model_validate(spec)
    except ValidationError as exc:
        raise invalid_input(exc, what=model.__name__) from exc


def scheduled_tick() -> JsonObject:
    """RQ's cron scheduler runs this every minute (`trainctl scheduler`): retrain each model
    whose schedule came due."""
    settings = load_settings()
    bus = EventBus.from_settings(current_job().connection, settings.redis)
    layout = DataLayout(settings.data_root.resolve())
    queued = scheduled_retrains(bus.client, layout, bus=bus)
    return {"queued": list(queued)}
