"""The job queue contract shared by the API, the CLI and the worker.

Jobs are RQ jobs whose id is the run id. They are enqueued by dotted path, so enqueuing never
imports the worker (and torch). Cancellation has two stages: a cooperative flag the worker
checks between steps (it keeps a final checkpoint and publishes `trainer.job.cancelled.v1`
with stage "cooperative"), then, for a run still going after a grace period, RQ's stop command
(stage "forced", published here).

Functions that publish take the caller's `bus`, built from its settings
(`EventBus.from_settings`); without one they publish on the default stream.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Literal

import redis
from rq import Queue, Retry
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.utils import as_text

from platform_core.errors import AppError, ErrorCode, FailureClass
from platform_core.event_bus import EventBus
from platform_core.events import (
    JobCancelled,
    JobCancelledPayload,
    JobFailed,
    JobFailedPayload,
    JobKind,
    JobQueued,
    JobQueuedPayload,
)
from platform_core.json_types import JsonObject
from platform_core.layout import check_id
from platform_core.run_state import RunStateStore, RunStatus

TRAINING_QUEUE = "training"  # long jobs: tokenizers, models
INFERENCE_QUEUE = "inference"  # short jobs, so a generate never waits behind a day of training

JOB_FUNCTIONS: dict[JobKind, str] = {
    "train_tokenizer": "trainer_worker.jobs.train_tokenizer",
    "train_model": "trainer_worker.jobs.train_model",
    "evaluate": "trainer_worker.jobs.evaluate",
    "generate": "trainer_worker.jobs.generate",
    "score": "trainer_worker.jobs.score",
    "prepare_dataset": "trainer_worker.jobs.prepare_dataset",
    "predict": "trainer_worker.jobs.predict",
    "study_trial": "trainer_worker.studies.trial_job.study_trial",
    "compare_models": "trainer_worker.classify.retrain_jobs.compare_models",
    "retrain_model": "trainer_worker.classify.retrain_jobs.retrain_model",
}  # a "study" runs as its trials' jobs (platform_core.studies): enqueue_job refuses it
_JOB_KINDS: dict[str, JobKind] = {kind: kind for kind in JOB_FUNCTIONS}
_QUEUE_OF: dict[JobKind, str] = {
    "train_tokenizer": TRAINING_QUEUE,
    "train_model": TRAINING_QUEUE,
    "evaluate": INFERENCE_QUEUE,
    "generate": INFERENCE_QUEUE,
    "score": INFERENCE_QUEUE,
    "prepare_dataset": TRAINING_QUEUE,
    "predict": INFERENCE_QUEUE,
    "study_trial": TRAINING_QUEUE,
    "compare_models": TRAINING_QUEUE,  # loads two models and scores a whole test split
    "retrain_model": TRAINING_QUEUE,
}
# A transient failure (Redis blip, tracking server restart) is retried by RQ twice more,
# 5 s then 10 s later: enough for a restart, bounded so a broken setup fails within a minute.
TRANSIENT_RETRY = (5, 10)
DEFAULT_MAX_ATTEMPTS = 3  # settings.WorkerSettings.max_attempts says why
RESULT_TTL_S = 7 * 24 * 3600  # RQ's own record of a result; the manifest on disk is the truth
FAILURE_TTL_S = 30 * 24 * 3600
# a sweeper's claim on a run, held until it expires: far longer than one sweep takes
SWEEP_LOCK_S = 60
# a stale run whose cancellation is pending ends here: the operator asked, its worker died
_DEAD_CANCELLED = "cancelled while its worker was gone; not resumed"
_log = logging.getLogger(__name__)


def queue_for(kind: JobKind) -> str:
    return _QUEUE_OF[kind]


def job_id_for(run_id: str, attempt: int) -> str:
    """The RQ job id of a run's job: the run id, then a suffix per requeue of a run whose
    worker died (the dead attempt's RQ job keeps its own record). RQ's own retries of a
    transient failure reuse their job."""
    return run_id if attempt == 1 else f"{run_id}--attempt-{attempt}"


def enqueue_job(
    client: redis.Redis,
    kind: JobKind,
    run_id: str,
    spec: JsonObject,
    *,
    user_id: int | None = None,
    attempt: int = 1,
    description: str = "",
    bus: EventBus | None = None,
    after: str | None = None,
) -> None:
    """Put a job on its queue, mark the run queued and publish `trainer.job.queued.v1` on
    `bus` (default: the default stream). `attempt` > 1 requeues a run whose worker died.
    Training jobs carry RQ's `Retry` for transient failures (`TRANSIENT_RETRY`). `after`:
    the run whose job must end first (RQ holds this one deferred until it does; a run's
    job ends whatever the run's outcome, so a chain never stalls on a failed link, and the
    job of a link whose worker died is handed on by `requeue_stale_runs`)."""
    if kind not in JOB_FUNCTIONS:
        raise AppError(ErrorCode.INVALID_INPUT, f"no worker job runs kind {kind!r} yet")
    check_id(run_id)
    queue = Queue(queue_for(kind), connection=client)
    store = RunStateStore(client)
    store.set_status(run_id, RunStatus.QUEUED)
    store.clear_cancel(run_id)
    if attempt == 1:
        store.set_meta(run_id, kind=kind, user_id=user_id, spec_json=json.dumps(spec))
    job_id = job_id_for(run_id, attempt)
    store.set_job_id(run_id, job_id)
    queue.enqueue(
        JOB_FUNCTIONS[kind],
        args=(run_id, spec),
        kwargs={"user_id": user_id},
        job_id=job_id,
        job_timeout=-1,  # training runs for days; liveness is the heartbeat's business
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        description=description or f"{kind} {run_id}",
        retry=Retry(max=len(TRANSIENT_RETRY), interval=list(TRANSIENT_RETRY)),
        depends_on=None if after is None else (store.job_id(after) or after),
    )
    (bus or EventBus(client)).publish(
        JobQueued(
            run_id=run_id,
            user_id=user_id,
            payload=JobQueuedPayload(kind=kind, queue=queue.name, description=description),
        )
    )
    _log.info("job enqueued", extra={"event": "job.enqueued", "run_id": run_id, "attempt": attempt})


CancelOutcome = Literal["cancelled", "requested", "forced"]


def request_cancel(
    client: redis.Redis, run_id: str, *, user_id: int | None = None, bus: EventBus | None = None
) -> CancelOutcome:
    """Stage one. A queued run is cancelled at once ("cancelled"); a running one gets the
    cooperative flag ("requested"). A finished or unknown run is CONFLICT / NOT_FOUND."""
    store = RunStateStore(client)
    status = store.status(run_id)
    if status is None:
        raise AppError(ErrorCode.NOT_FOUND, f"run {run_id} does not exist")
    if status.is_terminal:
        raise AppError(ErrorCode.CONFLICT, f"run {run_id} already {status}; nothing to cancel")
    store.request_cancel(run_id)
    if status is RunStatus.QUEUED:
        _cancel_rq_job(client, store.job_id(run_id) or run_id)
        store.set_status(run_id, RunStatus.CANCELLED, message="cancelled before it started")
        _free_retrain_lock(client, store, run_id)
        event = _cancelled(run_id, user_id, "cooperative", "cancelled before it started")
        (bus or EventBus(client)).publish(event)
        return "cancelled"
    return "requested"


def force_cancel_if_stuck(
    client: redis.Redis,
    run_id: str,
    *,
    requested_at: float,
    grace_s: float,
    now: float | None = None,
    user_id: int | None = None,
    bus: EventBus | None = None,
) -> bool:
    """Stage two: when the run is still running `grace_s` after the request, ask RQ to stop
    its work horse, mark it cancelled and publish the forced cancellation. Returns whether it
    did."""
    store = RunStateStore(client)
    if store.status(run_id) is not RunStatus.RUNNING:
        return False
    if (time.time() if now is None else now) - requested_at < grace_s:
        return False
    job_id = store.job_id(run_id) or run_id
    try:
        send_stop_job_command(client, job_id)
    except (InvalidJobOperation, NoSuchJobError):  # not executing: its worker died or it ended
        _log.warning("stop command found no executing job", extra={"run_id": run_id})
    message = f"did not stop within {grace_s:.0f} s of the request; stopped by force"
    # compare and set: of two sweepers, or a sweeper and the run ending on its own, one wins
    if store.move(run_id, RunStatus.CANCELLED, expected=RunStatus.RUNNING, message=message) != (
        "moved"
    ):
        return False
    _free_retrain_lock(client, store, run_id)  # the killed work horse never reached its end
    (bus or EventBus(client)).publish(_cancelled(run_id, user_id, "forced", message))
    _release_dependents(client, job_id)
    return True


def sweep_cancellations(
    client: redis.Redis, *, grace_s: float, now: float | None = None, bus: EventBus | None = None
) -> list[str]:
    """Force-stop every running run whose cancel request is older than `grace_s`; any worker
    runs this periodically. It reads only the pending cancellations past their grace (one
    round trip); a per-run lock keeps two workers from stopping the same run. Returns the run
    ids it stopped."""
    store = RunStateStore(client)
    stopped: list[str] = []
    for run_id, requested_at in store.due_cancellations(older_than_s=grace_s, now=now):
        if not _sweep_lock(client, run_id):
            continue
        owner = store.meta(run_id).get("user_id")
        if force_cancel_if_stuck(
            client,
            run_id,
            requested_at=requested_at,
            grace_s=grace_s,
            now=now,
            user_id=int(owner) if owner else None,
            bus=bus,
        ):
            stopped.append(run_id)
    return stopped


def requeue_stale_runs(
    client: redis.Redis,
    *,
    stale_after_s: float,
    now: float | None = None,
    bus: EventBus | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> list[str]:
    """Runs marked running whose heartbeat stopped `stale_after_s` ago lost their worker
    (killed, machine gone): enqueue their next attempt, which resumes from the newest valid
    checkpoint, or, when a cancellation of the run is pending, end it cancelled (the operator
    asked; the dead worker never saw it). Reads only the running runs and their heartbeats
    (one round trip); a per-run lock keeps two workers from sweeping the same run, and the
    move out of running is a compare and set. A run that already started `max_attempts`
    attempts is not requeued: it ends failed with the reason. The runs chained after a run
    (`enqueue_job(after=...)`) wait for its next attempt, or start once it ended here.
    Returns the run ids it requeued."""
    store = RunStateStore(client)
    requeued: list[str] = []
    for run_id in store.stale_running(older_than_s=stale_after_s, now=now):
        meta, spec_json = store.meta(run_id), store.spec_json(run_id)
        kind, owner = meta.get("kind"), meta.get("user_id")
        user_id = int(owner) if owner else None
        if kind == "study":  # no job of its own: its trials beat for it and are requeued
            continue
        if spec_json is None or kind not in JOB_FUNCTIONS:
            # not ours to resume; left unlocked, so the cancellation sweep may still stop it
            _log.warning("stale run without a spec; cannot requeue", extra={"run_id": run_id})
            continue
        if not _sweep_lock(client, run_id):
            continue
        outcome = store.move(
            run_id,
            RunStatus.QUEUED,
            expected=RunStatus.RUNNING,
            cancelled_instead=_DEAD_CANCELLED,
        )
        if outcome == "conflict":  # it moved on meanwhile (it ended, or another resumed it)
            continue
        dead_job = store.job_id(run_id) or run_id
        attempts = store.attempts(run_id)
        if outcome == "moved_instead":
            (bus or EventBus(client)).publish(
                _cancelled(run_id, user_id, "forced", _DEAD_CANCELLED)
            )
            _log.warning("stale run cancelled", extra={"event": "run.cancelled", "run_id": run_id})
        elif attempts >= max_attempts:
            _give_up(store, run_id, user_id, attempts, bus or EventBus(client))
        else:
            attempt = _attempt_of(dead_job) + 1
            # before the next attempt exists, so it cannot end before the chain waits for it
            _hand_over(client, dead_job, job_id_for(run_id, attempt))
            enqueue_job(
                client,
                _JOB_KINDS[kind],
                run_id,
                json.loads(spec_json),
                user_id=user_id,
                attempt=attempt,
                description=f"resume {run_id}",
                bus=bus,
            )
            _log.warning("stale run requeued", extra={"event": "run.requeued", "run_id": run_id})
            requeued.append(run_id)
            continue
        # it ended here, and no job of it will say so: the runs chained after it start (and
        # find it ended); a study counts its trial
        _cancel_rq_job(client, dead_job)
        if kind == "study_trial":
            _count_for_study(client, run_id, json.loads(spec_json))
        _free_retrain_lock(client, store, run_id)
    return requeued


def _sweep_lock(client: redis.Redis, run_id: str) -> bool:
    """Claim a run for one sweep (SET NX). Not released: it expires, so a run just requeued
    gets SWEEP_LOCK_S to start and beat before any worker may judge it again."""
    return bool(client.set(f"runs:sweep-lock:{run_id}", "1", nx=True, ex=SWEEP_LOCK_S))


def _give_up(
    store: RunStateStore, run_id: str, user_id: int | None, attempts: int, bus: EventBus
) -> None:
    """End a run whose attempts all died with their worker: failed, with the reason."""
    message = (
        f"its worker died during each of its {attempts} attempts; not requeued again "
        "(APP__WORKER__MAX_ATTEMPTS); see the run's logs.jsonl"
    )
    # queued by the sweep a moment ago: nobody else took it yet, so this cannot race
    store.set_status(run_id, RunStatus.FAILED, message=message)
    payload = JobFailedPayload(
        error_code=ErrorCode.TRAINING_FAILED,
        failure_class=FailureClass.FATAL,
        message=message,
        retrying=False,
    )
    bus.publish(JobFailed(run_id=run_id, user_id=user_id, payload=payload))
    _log.error("stale run failed for good", extra={"event": "run.abandoned", "run_id": run_id})


def _hand_over(client: redis.Redis, dead_job: str, successor: str) -> None:
    """The RQ job of an attempt whose worker died never ends in RQ: the runs chained after it
    (`enqueue_job(after=...)`, RQ dependents) would wait for ever. They wait for `successor`,
    the run's next attempt, instead; then the dead job is cancelled in RQ, so RQ's own
    clean-up of abandoned jobs never runs it again (its `Retry`) beside the next attempt."""
    source = Job.dependents_key_for(dead_job)

    def move(pipe: redis.client.Pipeline) -> None:  # retried whenever `source` changes
        ids = [as_text(job_id) for job_id in pipe.smembers(source)]
        dependents = [job for job in Job.fetch_many(ids, connection=client) if job]
        pipe.multi()
        for dependent in dependents:
            # the set RQ reads to decide that a dependent's dependencies are met
            pipe.srem(dependent.dependencies_key, dead_job)
            pipe.sadd(dependent.dependencies_key, successor)
            pipe.sadd(Job.dependents_key_for(successor), dependent.id)
        pipe.delete(source)

    client.transaction(move, source)
    _cancel_rq_job(client, dead_job)


def _count_for_study(client: redis.Redis, run_id: str, spec: JsonObject) -> None:
    """A study trial the sweep ended (given up on, or cancelled while its worker was dead)
    has ended, and no job of it will say so: count it for its study as its job would have
    (once, whoever counts it), so the study issues its next trial or hands out its
    finalization."""
    from platform_core.studies import StudyStore  # noqa: PLC0415 - studies imports this module

    StudyStore(client).fail_trial(str(spec.get("study_id")), run_id)


def _free_retrain_lock(client: redis.Redis, store: RunStateStore, run_id: str) -> None:
    """A retraining's verdict run that ended without its job reaching its end (cancelled
    while queued, stopped by force, given up on or cancelled while its worker was dead)
    frees its model's lock, as the job would have: the next retraining need not wait for
    the lock's expiry. Any other run: nothing to do."""
    spec_json = store.spec_json(run_id)
    if store.meta(run_id).get("kind") != "retrain_model" or spec_json is None:
        return
    from platform_core.retraining import release_lock  # noqa: PLC0415 - it imports this module

    release_lock(client, str(json.loads(spec_json).get("name")), run_id)


def _attempt_of(job_id: str | None) -> int:
    if job_id and "--attempt-" in job_id:
        return int(job_id.rsplit("--attempt-", 1)[1])
    return 1


def _release_dependents(client: redis.Redis, job_id: str) -> None:
    """Start the runs chained after the job of a run stopped by force now: RQ holds the
    dependents of a stopped job for ever. They find the run ended (cancelled)."""
    try:
        job = Job.fetch(job_id, connection=client)
    except NoSuchJobError:  # nothing chained after a job RQ no longer knows
        return
    Queue(job.origin, connection=client).enqueue_dependents(job, exclude_job_id=job.id)


def _cancel_rq_job(client: redis.Redis, job_id: str) -> None:
    """Cancel a run's RQ job (queued, or started by a worker that died). The runs chained
    after it are released: they start and find this run ended (a chain never stalls on a
    link whose job did not end in RQ)."""
    try:
        Job.fetch(job_id, connection=client).cancel(enqueue_dependents=True)
    except (NoSuchJobError, InvalidJobOperation):  # already gone: the status key still rules
        _log.info("no cancellable RQ job", extra={"event": "queue.cancel_missing"})


def _cancelled(
    run_id: str, user_id: int | None, stage: Literal["cooperative", "forced"], message: str
) -> JobCancelled:
    payload = JobCancelledPayload(stage=stage, message=message)
    return JobCancelled(run_id=run_id, user_id=user_id, payload=payload)
