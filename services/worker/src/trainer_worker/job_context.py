"""The lifecycle every run goes through: queued -> running -> completed | failed | cancelled.

`run_job` alone publishes a run's lifecycle events, once each per attempt: it counts the
attempt, marks the run running, announces the start before the body prepares anything, beats
from its own thread, runs the body, and turns what the body returned (an `Outcome`) or raised
(an `AppError`) into the terminal status, the manifest's failure record and the terminal
event. The body never talks back through the context: it returns.

Failures are classified by their error code (USER_INPUT, TRANSIENT, FATAL). A TRANSIENT one
is retried by RQ itself (`Retry` on the job, see `platform_core.queue`): the attempt publishes
its failure with `retrying=True`, puts the run back to queued and raises `RetryLater`, which
RQ answers by scheduling the next attempt.

Redis may blink while a run trains. Events go through the run's `EventSpool` (held on disk
and sent in order once Redis answers); the live progress figures and the cancel flag are
skipped while it does not answer; the terminal status is retried until it does (up to
`FINAL_WRITE_WAIT_S`), so a blip neither fails the run nor loses its ending.

With tracking on, every event the run publishes also goes to its `Tracker`
(`trainer_worker.tracking`), which hands metrics to MLflow from a thread of its own; when the
body is done, the lifecycle lets it finish (ending the MLflow run with the run's status) and
records the MLflow run in the manifest. A run whose MLflow never answered still completes,
and its message and manifest say so.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
from platform_core.layout import DataLayout
from platform_core.logging import log_context
from platform_core.manifests import (
    RunFailure,
    RunManifest,
    read_run_manifest,
    storage_error,
    write_manifest,
)
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.settings import TrackingSettings
from trainer_worker import defaults
from trainer_worker.event_spool import REDIS_DOWN, EventSpool
from trainer_worker.heartbeat import Heartbeat
from trainer_worker.tracking.tracker import EndStatus, Tracker

_log = logging.getLogger(__name__)
# how long the end of a run waits for Redis to take its status and held events; past it the
# events stay in the run's spool file for its next attempt
FINAL_WRITE_WAIT_S = 300.0


class RetryLater(Exception):
    """Raised out of a job so that RQ runs its next attempt (the job's `Retry`)."""

    def __init__(self, error: AppError) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a job's body hands back: its small JSON-safe result and how to describe it."""

    result: JsonObject
    message: str  # one line for the terminal event, the run's message and DMs
    artifact_dir: str | None = None  # relative to the data root
    cancelled_at_step: int | None = None  # set when the body stopped on a cancel request
    report: JsonObject | None = None  # goes into the completed event (a dataset's counts)
    pruned: bool = False  # a study trial its pruner stopped: ends "pruned", not "completed"


@dataclass
class JobContext:
    """What a job's body may use: ids, the data root's layout, the events and the run
    state."""

    run_id: str
    kind: JobKind
    user_id: int | None
    attempt: int
    layout: DataLayout
    spool: EventSpool  # the run's events, on the configured stream
    store: RunStateStore
    tracker: Tracker | None = None  # None: tracking is off
    _started: float = field(default_factory=time.monotonic)
    _stop_requested: bool = False

    def publish(self, event: Event) -> None:
        self.spool.publish(event)
        if self.tracker is not None:  # a queue put: never blocks, never fails
            self.tracker.observe(event)

    def should_stop(self) -> bool:
        """The cooperative cancel flag (one Redis round trip; the last answer while Redis
        does not answer)."""
        if self.spool.healthy:
            try:
                self._stop_requested = self.store.cancel_requested(self.run_id)
            except REDIS_DOWN:
                _log.warning("cancel flag unreadable", extra={"event": "cancel.unreadable"})
        return self._stop_requested

    def mark_published(self, step: int) -> int:
        """Raise the run's published mark to `step`; the mark (`step` while Redis is down:
        this attempt still publishes each step once)."""
        if self.spool.healthy:
            try:
                return self.store.mark_published(self.run_id, step)
            except REDIS_DOWN:
                _log.warning("published mark not saved", extra={"event": "mark.unsaved"})
        return step

    def set_live(self, figures: dict[str, float | int | str]) -> None:
        """Live figures for GET /runs/{id}; skipped while Redis does not answer (the next
        report replaces them anyway)."""
        if not self.spool.healthy:
            return
        try:
            self.store.set_progress(self.run_id, {k: v for k, v in figures.items()})
        except REDIS_DOWN:
            _log.warning("live progress not saved", extra={"event": "progress.unsaved"})

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
        self.set_live(live)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started


Body = Callable[[JobContext], Outcome]
# the step a run resumes from, as far as can be told before preparing anything (None: none)
ResumeHint = Callable[[DataLayout, str], int | None]


def run_job(
    kind: JobKind,
    run_id: str,
    body: Body,
    *,
    bus: EventBus,
    layout: DataLayout,
    user_id: int | None = None,
    can_retry: bool = False,
    resume_hint: ResumeHint | None = None,
    tracking: TrackingSettings | None = None,
) -> JsonObject:
    """Run `body` inside the lifecycle; return a small JSON-safe result. `can_retry`: RQ has
    an attempt left for this job, so a TRANSIENT failure raises `RetryLater`. `tracking`:
    the MLflow settings when tracking is on."""
    store = RunStateStore(bus.client)
    with log_context(run_id=run_id):
        if store.status(run_id) is RunStatus.CANCELLED:  # cancelled while it waited
            return {"run_id": run_id, "status": RunStatus.CANCELLED.value}
        attempt = store.next_attempt(run_id)
        context = JobContext(
            run_id=run_id,
            kind=kind,
            user_id=user_id,
            attempt=attempt,
            layout=layout,
            spool=EventSpool(bus, layout.spool_file(run_id)),
            store=store,
        )
        if tracking is not None and tracking.enabled:
            context.tracker = Tracker(
                run_id=run_id, kind=kind, attempt=attempt, layout=layout, settings=tracking
            )
        store.set_status(run_id, RunStatus.RUNNING)
        context.spool.flush(timeout_s=0.0)  # events an earlier attempt held go first
        try:
            return _attempt(context, body, can_retry=can_retry, resume_hint=resume_hint)
        finally:
            _finish_tracking(context, None)  # a no-op once the ending below finished it
            context.spool.flush(timeout_s=FINAL_WRITE_WAIT_S)
            context.spool.close()


def _attempt(
    context: JobContext, body: Body, *, can_retry: bool, resume_hint: ResumeHint | None
) -> JsonObject:
    layout, run_id = context.layout, context.run_id
    try:  # only a hint: the body finds out for itself, and reports what goes wrong
        hint = resume_hint(layout, run_id) if resume_hint else None
    except (AppError, OSError):
        hint = None
    _announce_start(context, hint)
    try:
        with Heartbeat(context.store, run_id, defaults.HEARTBEAT_INTERVAL_S):
            outcome = body(context)
    except AppError as error:
        return _fail(context, error, can_retry=can_retry)
    except OSError as exc:  # a write the body did not wrap: still the storage's fault
        _log.exception("storage failure", extra={"event": "job.storage_failed"})
        return _fail(context, storage_error(exc, "writing the run"), can_retry=can_retry)
    except Exception as exc:  # a bug: recorded as FATAL with its traceback in the log
        _log.exception("job crashed", extra={"event": "job.crashed"})
        crash = AppError(ErrorCode.INTERNAL, f"unexpected {type(exc).__name__}: see worker log")
        return _fail(context, crash, can_retry=can_retry)
    if outcome.cancelled_at_step is not None:
        return _cancelled(context, outcome)
    return _completed(context, outcome)


def _announce_start(context: JobContext, resumed_from_step: int | None) -> None:
    payload = JobStartedPayload(
        kind=context.kind,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        attempt=context.attempt,
        resumed_from_step=resumed_from_step,
    )
    context.publish(JobStarted(run_id=context.run_id, user_id=context.user_id, payload=payload))
    _log.info("job started", extra={"event": "job.started", "attempt": context.attempt})


def _completed(context: JobContext, outcome: Outcome) -> JsonObject:
    message = outcome.message
    if note := _finish_tracking(context, "FINISHED"):
        message = f"{message}; {note}"
    # a pruned trial ended as designed: its terminal event is "completed", its status pruned
    status = RunStatus.PRUNED if outcome.pruned else RunStatus.COMPLETED
    _set_final_status(context, status, message)
    payload = JobCompletedPayload(
        duration_s=context.elapsed_s,
        message=message,
        artifact_dir=outcome.artifact_dir,
        report=outcome.report,
    )
    context.publish(JobCompleted(run_id=context.run_id, user_id=context.user_id, payload=payload))
    _log.info("job completed", extra={"event": "job.completed"})
    return {**outcome.result, "run_id": context.run_id, "status": status.value}


def _cancelled(context: JobContext, outcome: Outcome) -> JsonObject:
    step = outcome.cancelled_at_step
    _finish_tracking(context, "KILLED")
    _set_final_status(context, RunStatus.CANCELLED, outcome.message)
    payload = JobCancelledPayload(stage="cooperative", step=step, message=outcome.message)
    context.publish(JobCancelled(run_id=context.run_id, user_id=context.user_id, payload=payload))
    _log.info("job cancelled", extra={"event": "job.cancelled", "step": step or 0})
    return {**outcome.result, "run_id": context.run_id, "status": RunStatus.CANCELLED.value}


def _fail(context: JobContext, error: AppError, *, can_retry: bool) -> JsonObject:
    retrying = error.failure_class is FailureClass.TRANSIENT and can_retry
    _log.warning(
        "job failed: %s",
        error.message,
        extra={"event": "job.failed", "error_code": error.code.value, "attempt": context.attempt},
    )
    # a retried run goes on in its next attempt, and so does its MLflow run
    _finish_tracking(context, None if retrying else "FAILED")
    if not retrying:
        _record_failure(context, error)
    payload = JobFailedPayload(
        error_code=error.code,
        failure_class=error.failure_class,
        message=error.message,
        retrying=retrying,
    )
    # the status first: a reader that sees the terminal event finds the run ended
    status = RunStatus.QUEUED if retrying else RunStatus.FAILED
    _set_final_status(context, status, error.message)
    context.publish(JobFailed(run_id=context.run_id, user_id=context.user_id, payload=payload))
    if retrying:
        raise RetryLater(error)
    return {
        "run_id": context.run_id,
        "status": RunStatus.FAILED.value,
        "error_code": error.code.value,
        "failure_class": error.failure_class.value,
    }


def _set_final_status(context: JobContext, status: RunStatus, message: str) -> None:
    """The attempt's last status, retried with back-off while Redis does not answer."""
    deadline = time.monotonic() + FINAL_WRITE_WAIT_S
    delay = 0.5
    while True:
        try:
            context.store.set_status(context.run_id, status, message=message)
            return
        except REDIS_DOWN:
            if time.monotonic() + delay > deadline:
                raise
            _log.warning("status not saved; retrying", extra={"event": "status.retry"})
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _finish_tracking(context: JobContext, status: EndStatus | None) -> str:
    """Let the tracker hand MLflow what it holds and end the MLflow run (`status`; None:
    leave it running for a later attempt); record the MLflow run in the manifest. Returns a
    note for the run's message when MLflow did not get everything ("" otherwise)."""
    tracker, context.tracker = context.tracker, None  # once per attempt
    if tracker is None:
        return ""
    if not tracker.tracking:  # nothing was tracked: nothing to wait for
        tracker.finish(status)
        return ""
    # the wait for MLflow (up to final_wait_s) keeps beating: the run is alive, not stale
    with Heartbeat(context.store, context.run_id, defaults.HEARTBEAT_INTERVAL_S):
        report = tracker.finish(status)
    if report is None:  # the run published no metrics: nothing was tracked
        return ""
    path = context.layout.run_manifest(context.run_id)
    try:
        if path.is_file():
            manifest: RunManifest = read_run_manifest(path)
            write_manifest(path, manifest.model_copy(update={"tracking": report.record}))
    except AppError as unwritten:  # the tracking record file still tells it
        _log.error(
            "the MLflow run could not be recorded in the manifest: %s",
            unwritten.message,
            extra={"event": "manifest.unwritten", "error_code": unwritten.code.value},
        )
    if not report.synced:
        _log.warning(
            "run ends with metrics MLflow has not confirmed",
            extra={"event": "tracking.unsynced", "pending": report.record.pending_metrics},
        )
    return report.describe(context.layout.relative(tracker.buffer_path))


def _record_failure(context: JobContext, error: AppError) -> None:
    """Write the failure into the run's manifest when the run got that far. A failure that
    cannot be written (the disk is full) is logged; the event and Redis still tell it."""
    path = context.layout.run_manifest(context.run_id)
    if not path.is_file():
        return
    failure = RunFailure(
        error_code=error.code,
        failure_class=error.failure_class,
        message=error.message,
        attempt=context.attempt,
    )
    try:
        manifest = read_run_manifest(path)
        update = {"status": RunStatus.FAILED, "failure": failure, "finished_at": datetime.now(UTC)}
        write_manifest(path, manifest.model_copy(update=update))
    except AppError as unwritten:
        _log.error(
            "the failure could not be recorded in the manifest: %s",
            unwritten.message,
            extra={"event": "manifest.unwritten", "error_code": unwritten.code.value},
        )
