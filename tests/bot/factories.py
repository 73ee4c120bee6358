"""Events as the worker publishes them, for the bot's tests: the shared samples
(tests/platform_core/event_samples.py) re-addressed to a run, with the figures a test needs."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from platform_core.events import (
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobProgress,
    JobQueued,
    JobStarted,
    MetricsCheckpoint,
    MetricsCompleted,
    MetricsConfig,
    MetricsEval,
    MetricsProgress,
    StudyCompleted,
    StudyStarted,
    StudyTrialCompleted,
    new_event_id,
    utc_now,
)
from tests.platform_core.event_samples import samples

E = TypeVar("E", bound=BaseModel)


def like(kind: type[E], run_id: str, **payload: object) -> E:
    """The sample event of `kind`, new, for `run_id`, with `payload` fields replaced
    (validated like any event)."""
    sample = next(event for event in samples() if isinstance(event, kind))
    data = sample.model_dump()
    data |= {"run_id": run_id, "event_id": new_event_id(), "ts": utc_now(), "user_id": None}
    data["payload"] |= payload
    return kind.model_validate(data)


def queued(run_id: str = "run-1") -> JobQueued:
    return like(JobQueued, run_id)


def started(run_id: str = "run-1", resumed_from_step: int | None = None) -> JobStarted:
    return like(JobStarted, run_id, worker="w1", attempt=1, resumed_from_step=resumed_from_step)


def job_progress(run_id: str = "run-1", step: int = 10, total: int = 100) -> JobProgress:
    fraction = step / total
    return like(JobProgress, run_id, step=step, total_steps=total, fraction=fraction, eta_s=90.0)


def metrics_progress(
    run_id: str = "run-1", step: int = 10, loss: float = 2.5, eta_s: float | None = 80.0
) -> MetricsProgress:
    return like(MetricsProgress, run_id, step=step, loss=loss, eta_s=eta_s, tokens_per_s=12_345.6)


def evaluated(run_id: str = "run-1", step: int = 50) -> MetricsEval:
    return like(MetricsEval, run_id, step=step, eval_loss=2.0, perplexity=7.389)


def checkpoint(run_id: str = "run-1", *, is_best: bool = True) -> MetricsCheckpoint:
    path = "/srv/data/runs/run-1/checkpoints/step-50.pt"
    size = 3 * 1024 * 1024
    return like(
        MetricsCheckpoint, run_id, step=50, path=path, size_bytes=size, is_best=is_best, metric=2.0
    )


def configured(run_id: str = "run-1") -> MetricsConfig:
    return like(MetricsConfig, run_id, model_family="char_lstm")


def metrics_completed(run_id: str = "run-1") -> MetricsCompleted:
    return like(MetricsCompleted, run_id, final_perplexity=4.95, tokens_per_s=None)


def completed(run_id: str = "run-1") -> JobCompleted:
    return like(JobCompleted, run_id, duration_s=3725, message="ok")


def failed(run_id: str = "run-1") -> JobFailed:
    return like(JobFailed, run_id, error_code="OUT_OF_MEMORY", message="CUDA out of memory")


def cancelled(run_id: str = "run-1") -> JobCancelled:
    return like(JobCancelled, run_id, step=40)


def study_started(run_id: str = "study-1") -> StudyStarted:
    return like(StudyStarted, run_id, study_name="lr sweep")


def trial_completed(run_id: str = "study-1") -> StudyTrialCompleted:
    return like(StudyTrialCompleted, run_id, value=1.25)


def study_completed(run_id: str = "study-1", best: int | None = 3) -> StudyCompleted:
    if best is None:
        return like(StudyCompleted, run_id, n_completed=6, best_trial_number=None, best_value=None)
    params = {"lr": 0.001, "layers": 2}
    return like(StudyCompleted, run_id, n_completed=6, best_value=1.25, best_params=params)
