"""The lifecycle every job goes through: running -> completed | failed | cancelled.

`run_job` marks the run running, publishes `trainer.job.started.v1` (or leaves that to a body
that first finds the step it resumes from), beats from its own thread, runs the job's body, and
turns the outcome into the terminal status, message and event. Failures are classified by
their error code (USER_INPUT, TRANSIENT, FATAL); only TRANSIENT ones are retried, with backoff
and a bound.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from platform_core.errors import AppError, ErrorCode, FailureClass
from platform_core.event_bus import EventBus
from platform_core.events import (
    Event,
    JobCancelled,
    JobCancelledPayload,
    JobCompleted,
    JobCompletedPayload,
    JobFailed,
    JobFailedPayload,
    JobKind,
    JobProgress,
    JobProgressPayload,
    JobStarted,
    JobStartedPayload,
)
from platform_core.json_types import JsonObject
from platform_core.logging import log_context
from platform_core.queue import enqueue_job
from platform_core.run_state import RunStateStore, RunStatus
from trainer_worker import defaults
from trainer_worker.heartbeat import Heartbeat

_log = logging.getLogger(__name__)


@dataclass
class JobContext:
    """What a job's body may use: ids, the data root, the bus and the run state."""

    run_id: str
    kind: JobKind
    user_id: int | None
    attempt: int
    data_root: Path
    bus: EventBus  # on the configured stream; its client is the worker's connection
    store: RunStateStore
    # set by the body
    message: str = ""
    artifact_dir: str | None = None
    cancelled_at_step: int | None = None
    manifest_path: Path | None = None  # where a failure is recorded once the run has one
    _started: float = field(default_factory=time.monotonic)
    _announced: bool = False

    @property
    def client(self) -> redis.Redis:
        return self.bus.client

    def publish(self, event: Event) -> None:
        self.bus.publish(event)

    def announce_start(self, *, resumed_from_step: int | None = None) -> None:
        """Publish `trainer.job.started.v1`, once per attempt: later calls do nothing."""
        if self._announced:
            return
        self._announced = True
        payload = JobStartedPayload(
            kind=self.kind,
            worker=f"{socket.gethostname()}:{os.getpid()}",
            attempt=self.attempt,
            resumed_from_step=resumed_from_step,
        )
        self.publish(JobStarted(run_id=self.run_id, user_id=self.user_id, payload=payload))
        _log.info("job started", extra={"event": "job.started", "attempt": self.attempt})

    def should_stop(self) -> bool:
        """The cooperative cancel flag (one Redis round trip)."""
        return self.store.cancel_requested(self.run_id)

    def progress(
        self,
        *,
        step: int,
        total_steps: int | None,
        epoch: float,
        eta_s: float | None,
        message: str = "",
        figures: dict[str, float | int | str] | None = None,
    ) -> None:
        """Publish `trainer.job.progress.v1` and keep the live figures for GET /runs/{id}."""
        fraction = min(1.0, step / total_steps) if total_steps else 0.0
        payload = JobProgressPayload(
            step=step,
            total_steps=total_steps,
            epoch=epoch,
            fraction=fraction,
            eta_s=eta_s,
            message=message,
        )
        self.publish(JobProgress(run_id=self.run_id, user_id=self.user_id, payload=payload))
        live: dict[str, float | int | str] = {"step": step, "epoch": epoch, "fraction": fraction}
        if total_steps:
            live["total_steps"] = total_steps
        if eta_s is not None:
            live["eta_s"] = round(eta_s, 1)
        live.update(figures or {})
        self.store.set_progress(self.run_id, {k: v for k, v in live.items()})

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started


Body = Callable[[JobContext], JsonObject]


def run_job(
    kind: JobKind,
    run_id: str,
    spec: JsonObject,
    body: Body,
    *,
    bus: EventBus,
    data_root: Path,
    attempt: int = 1,
    user_id: int | None = None,
    body_announces_start: bool = False,
) -> JsonObject:
    """Run `body` inside the lifecycle; return a small JSON-safe result. With
    `body_announces_start` the body calls `context.announce_start` itself, once it knows the
    step it resumes from (a failure before that announces the start first)."""
    store = RunStateStore(bus.client)
    context = JobContext(
        run_id=run_id,
        kind=kind,
        user_id=user_id,
        attempt=attempt,
        data_root=data_root,
        bus=bus,
        store=store,
    )
    with log_context(run_id=run_id):
        if store.status(run_id) is RunStatus.CANCELLED:  # cancelled while it waited
            return {"run_id": run_id, "status": RunStatus.CANCELLED.value}
        store.set_status(run_id, RunStatus.RUNNING)
        if not body_announces_start:
            context.announce_start()
        try:
            with Heartbeat(store, run_id, defaults.HEARTBEAT_INTERVAL_S):
                result = body(context)
        except AppError as error:
            return _fail(context, spec, error)
        except Exception as exc:  # a bug: recorded as FATAL with its traceback in the log
            _log.exception("job crashed", extra={"event": "job.crashed"})
            crash = AppError(ErrorCode.INTERNAL, f"unexpected {type(exc).__name__}: see worker log")
            return _fail(context, spec, crash)
        if context.cancelled_at_step is not None:
            return _cancelled(context, result)
        return _completed(context, result)


def _completed(context: JobContext, result: JsonObject) -> JsonObject:
    message = context.message or f"{context.kind} finished in {context.elapsed_s:.1f} s"
    context.store.set_status(context.run_id, RunStatus.COMPLETED, message=message)
    payload = JobCompletedPayload(
        duration_s=context.elapsed_s, message=message, artifact_dir=context.artifact_dir
    )
    context.publish(JobCompleted(run_id=context.run_id, user_id=context.user_id, payload=payload))
    _log.info("job completed", extra={"event": "job.completed"})
    return {**result, "run_id": context.run_id, "status": RunStatus.COMPLETED.value}


def _cancelled(context: JobContext, result: JsonObject) -> JsonObject:
    step = context.cancelled_at_step
    message = context.message or f"cancelled at step {step}"
    context.store.set_status(context.run_id, RunStatus.CANCELLED, message=message)
    payload = JobCancelledPayload(stage="cooperative", step=step, message=message)
    context.publish(JobCancelled(run_id=context.run_id, user_id=context.user_id, payload=payload))
    _log.info("job cancelled", extra={"event": "job.cancelled", "step": step or 0})
    return {**result, "run_id": context.run_id, "status": RunStatus.CANCELLED.value}


def _fail(context: JobContext, spec: JsonObject, error: AppError) -> JsonObject:
    context.announce_start()  # a body that failed before announcing (a bad spec) started too
    retrying = (
        error.failure_class is FailureClass.TRANSIENT
        and context.attempt < defaults.TRANSIENT_MAX_ATTEMPTS
    )
    _log.warning(
        "job failed: %s",
        error.message,
        extra={"event": "job.failed", "error_code": error.code.value, "attempt": context.attempt},
    )
    _record_failure(context, error)
    payload = JobFailedPayload(
        error_code=error.code,
        failure_class=error.failure_class,
        message=error.message,
        retrying=retrying,
    )
    context.publish(JobFailed(run_id=context.run_id, user_id=context.user_id, payload=payload))
    if retrying:
        delay = defaults.TRANSIENT_BACKOFF_S * 2 ** (context.attempt - 1)
        enqueue_job(
            context.client,
            context.kind,
            context.run_id,
            spec,
            user_id=context.user_id,
            attempt=context.attempt + 1,
            delay_s=delay,
            bus=context.bus,
        )
    else:
        context.store.set_status(context.run_id, RunStatus.FAILED, message=error.message)
    return {
        "run_id": context.run_id,
        "status": RunStatus.QUEUED.value if retrying else RunStatus.FAILED.value,
        "error_code": error.code.value,
        "failure_class": error.failure_class.value,
    }


def _record_failure(context: JobContext, error: AppError) -> None:
    """Write the failure into the run's manifest when the run got that far."""
    path = context.manifest_path
    if path is None or not path.exists():
        return
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["status"] = RunStatus.FAILED.value
    manifest["failure"] = {
        "error_code": error.code.value,
        "failure_class": error.failure_class.value,
        "message": error.message,
        "attempt": context.attempt,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(tmp, path)
