"""One fully populated sample of every event type, with fixed ids and timestamps, for the
round-trip and golden-file tests (and for any test that needs a realistic event)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypedDict

from platform_core.errors import ErrorCode, FailureClass
from platform_core.events import (
    Event,
    JobCancelled,
    JobCancelledPayload,
    JobCompleted,
    JobCompletedPayload,
    JobFailed,
    JobFailedPayload,
    JobProgress,
    JobProgressPayload,
    JobQueued,
    JobQueuedPayload,
    JobStarted,
    JobStartedPayload,
    MetricsCheckpoint,
    MetricsCheckpointPayload,
    MetricsCompleted,
    MetricsCompletedPayload,
    MetricsConfig,
    MetricsConfigPayload,
    MetricsEval,
    MetricsEvalPayload,
    MetricsProgress,
    MetricsProgressPayload,
    ModelPromoted,
    ModelRetrained,
    ModelRetrainedPayload,
    ModelRolledBack,
    ModelStageChangedPayload,
    StudyCompleted,
    StudyCompletedPayload,
    StudyStarted,
    StudyStartedPayload,
    StudyTrialCompleted,
    StudyTrialCompletedPayload,
)


class _Common(TypedDict):
    event_id: str
    run_id: str
    user_id: int
    ts: datetime


TS = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
COMMON = _Common(event_id="e" * 32, run_id="run-0001", user_id=123456789012345678, ts=TS)


def samples() -> list[Event]:
    return [
        JobQueued(
            **COMMON,
            payload=JobQueuedPayload(kind="train_model", queue="training", description="gpt2 tiny"),
        ),
        JobStarted(
            **COMMON,
            payload=JobStartedPayload(
                kind="train_model", worker="w-1", attempt=2, resumed_from_step=40
            ),
        ),
        JobProgress(
            **COMMON,
            payload=JobProgressPayload(
                step=50, total_steps=200, epoch=0.5, fraction=0.25, eta_s=12.5, message="training"
            ),
        ),
        JobCompleted(
            **COMMON,
            payload=JobCompletedPayload(
                duration_s=61.2, message="done", artifact_dir="runs/run-0001"
            ),
        ),
        JobFailed(
            **COMMON,
            payload=JobFailedPayload(
                error_code=ErrorCode.TRAINING_DIVERGED,
                failure_class=FailureClass.USER_INPUT,
                message="loss became NaN at step 7",
                retrying=False,
            ),
        ),
        JobCancelled(
            **COMMON,
            payload=JobCancelledPayload(stage="cooperative", step=12, message="cancelled by owner"),
        ),
        MetricsConfig(
            **COMMON,
            payload=MetricsConfigPayload(
                model_family="gpt2",
                preset="tiny",
                num_params=123456,
                vocab_size=512,
                batch_size=8,
                max_steps=200,
                learning_rate=3e-4,
                device="cpu",
                precision="fp32",
                seed=1337,
                tokenizer_id="tok-1",
            ),
        ),
        MetricsProgress(
            **COMMON,
            payload=MetricsProgressPayload(
                step=50,
                epoch=0.5,
                loss=3.25,
                lr=2.5e-4,
                tokens_per_s=10240.0,
                eta_s=12.5,
                grad_norm=0.75,
            ),
        ),
        MetricsEval(
            **COMMON,
            payload=MetricsEvalPayload(
                step=100, eval_loss=3.0, perplexity=20.085536923187668, metrics={"accuracy": 0.5}
            ),
        ),
        MetricsCheckpoint(
            **COMMON,
            payload=MetricsCheckpointPayload(
                step=100,
                path="runs/run-0001/checkpoints/step-000100",
                size_bytes=4096,
                sha256="a" * 64,
                is_best=True,
                metric=3.0,
            ),
        ),
        MetricsCompleted(
            **COMMON,
            payload=MetricsCompletedPayload(
                steps=200,
                duration_s=61.2,
                final_loss=2.5,
                final_eval_loss=2.75,
                final_perplexity=15.642631884188171,
                tokens_per_s=10000.0,
                artifact_dir="runs/run-0001",
            ),
        ),
        StudyStarted(
            **COMMON,
            payload=StudyStartedPayload(
                study_name="s-1", n_trials=10, metric="eval_loss", direction="minimize"
            ),
        ),
        StudyTrialCompleted(
            **COMMON,
            payload=StudyTrialCompletedPayload(
                trial_number=3,
                state="COMPLETE",
                value=2.5,
                params={"lr": 0.001, "batch_size": 16, "preset": "tiny", "compile": False},
                trial_run_id="run-0004",
            ),
        ),
        StudyCompleted(
            **COMMON,
            payload=StudyCompletedPayload(
                n_completed=8,
                n_pruned=1,
                n_failed=1,
                duration_s=600.0,
                best_trial_number=3,
                best_value=2.5,
                best_params={"lr": 0.001},
            ),
        ),
        ModelPromoted(
            **COMMON,
            payload=ModelStageChangedPayload(
                name="clf",
                version="1.2.0",
                from_stage="staging",
                to_stage="production",
                previous_production="1.0.0",
                actor="123456789012345678",
                reason="A/B test won",
            ),
        ),
        ModelRolledBack(
            **COMMON,
            payload=ModelStageChangedPayload(
                name="clf",
                version="1.0.0",
                from_stage="archived",
                to_stage="production",
                previous_production="1.2.0",
                actor="ana",
                reason="latency",
            ),
        ),
        ModelRetrained(
            **COMMON,
            payload=ModelRetrainedPayload(
                name="clf",
                trigger="schedule",
                decision="KEEP",
                reason="accuracy gain +0.0100 is below the required +0.0200",
                production_version="1.2.0",
                candidate_version="1.3.0",
                dataset_id="ds-7",
                current_accuracy=0.91,
                candidate_accuracy=0.92,
                p_value=0.5,
                report="models/clf/comparisons/retrain-1/report.json",
            ),
        ),
    ]
