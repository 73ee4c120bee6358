"""A study's live state in Redis and the decisions its trials share, for the API (create,
cancel, read) and the worker (a trial's end). No optuna here: the worker owns the Optuna
storage; this module owns who does what next.

A study is a run of kind "study" (`runs:status:<id>`, meta, spec, message, the run indexes:
`GET /studies` is a page of the run index by kind). It has no job of its own: each trial is a
`study_trial` job on the training queue, so N workers run N trials of one study, and one
worker can run all of them. Creating a study issues `parallelism` trial tickets; when a trial
ends, one Lua step counts it (once per trial, whoever ends it) and decides what follows:
issue the next ticket (the study still needs trials, is not cancelled and not past its
deadline), or, for the end of the last trial in flight, finalize (exactly once). Keys:

    studies:<id>:plan      hash: n_trials, deadline (UNIX s, 0 = none)
    studies:<id>:issued    tickets issued so far (trial run ids <id>-t0001, ...)
    studies:<id>:done      set of trial run ids counted as ended
    studies:<id>:runs      sorted set: trial run id by ticket
    studies:<id>:trials    hash: trial run id -> JSON TrialRecord
    studies:<id>:finalize  set once: the finalization was handed out
    studies:<id>:kept      the ended trial whose checkpoint is kept (the best so far)
    studies:<id>:given_up  set of trials ended by the stale-run sweep, not by their job: the
                           next trial to start, or the finalization, removes their checkpoints
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import redis
from rq import Queue

from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import JobQueued, JobQueuedPayload
from platform_core.json_types import JsonObject
from platform_core.layout import check_id
from platform_core.queue import (
    FAILURE_TTL_S,
    RESULT_TTL_S,
    TRAINING_QUEUE,
    enqueue_job,
    request_cancel,
)
from platform_core.run_state import INDEX_KEY, RunStateStore, RunStatus, cancel_key
from platform_core.study_api import TrialRecord, best_trial
from platform_core.study_specs import StudySpec

_log = logging.getLogger(__name__)
STUDY_KIND = "study"
FINALIZE_FUNCTION = "trainer_worker.studies.finalize.finalize_study"
MAX_STUDY_ID_CHARS = 58  # room for a trial suffix (-t0001 .. -t10000) in a 64-char run id

NextStep = Literal["enqueue", "finalize", "none"]


def _key(study_id: str, what: str) -> str:
    return f"studies:{study_id}:{what}"


def trial_run_id(study_id: str, ticket: int) -> str:
    return f"{study_id}-t{ticket:04d}"


@dataclass(frozen=True)
class StudyView:
    study_id: str
    status: RunStatus
    spec: StudySpec
    message: str | None
    trials: list[TrialRecord]
    best: TrialRecord | None
    user_id: int | None
    created_at: float | None  # UNIX seconds


# KEYS: done, issued, plan, study cancel flag, finalize; ARGV: trial run id, now
_FINISH = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return {'none', 0} end
local finished = redis.call('SCARD', KEYS[1])
local issued = tonumber(redis.call('GET', KEYS[2]) or '0')
local n = tonumber(redis.call('HGET', KEYS[3], 'n_trials') or '0')
local deadline = tonumber(redis.call('HGET', KEYS[3], 'deadline') or '0')
local stopping = redis.call('EXISTS', KEYS[4]) == 1
  or (deadline > 0 and tonumber(ARGV[2]) >= deadline)
if (not stopping) and issued < n then
  return {'enqueue', redis.call('INCR', KEYS[2])}
end
if finished >= issued and redis.call('SET', KEYS[5], '1', 'NX') then
  return {'finalize', 0}
end
return {'none', 0}
"""


class StudyStore:
    """A study's Redis state; every decision shared by workers is one atomic step."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.runs = RunStateStore(client)

    def create(
        self,
        study_id: str,
        spec: StudySpec,
        *,
        user_id: int | None,
        bus: EventBus | None = None,
        now: float | None = None,
    ) -> list[str]:
        """Record the study (queued), announce it (`trainer.job.queued.v1`, kind "study": the
        bot watches its owner's studies from there) and enqueue its first `parallelism`
        trials; their run ids. CONFLICT when the id is taken."""
        check_id(study_id, what="study id")
        if len(study_id) > MAX_STUDY_ID_CHARS:
            raise AppError(
                ErrorCode.INVALID_INPUT, f"a study id has at most {MAX_STUDY_ID_CHARS} characters"
            )
        started = time.time() if now is None else now
        # ZADD NX claims the id atomically (runs and studies share one id space)
        if self.runs.status(study_id) is not None or not self.client.zadd(
            INDEX_KEY, {study_id: started}, nx=True
        ):
            raise AppError(ErrorCode.CONFLICT, f"{study_id} already exists; choose another id")
        deadline = started + spec.timeout_s if spec.timeout_s is not None else 0.0
        first = min(spec.parallelism, spec.n_trials)
        self.runs.set_status(study_id, RunStatus.QUEUED)
        self.runs.set_meta(
            study_id, kind=STUDY_KIND, user_id=user_id, spec_json=spec.model_dump_json()
        )
        pipe = self.client.pipeline()
        pipe.hset(_key(study_id, "plan"), mapping={"n_trials": spec.n_trials, "deadline": deadline})
        pipe.set(_key(study_id, "issued"), first)
        pipe.execute()
        queued = JobQueuedPayload(kind="study", queue=TRAINING_QUEUE, description=spec.name)
        (bus or EventBus(self.client)).publish(
            JobQueued(run_id=study_id, user_id=user_id, payload=queued)
        )
        return [self.enqueue_trial(study_id, ticket) for ticket in range(1, first + 1)]

    def enqueue_trial(self, study_id: str, ticket: int) -> str:
        """Put the trial of `ticket` on the training queue; its run id."""
        run_id = trial_run_id(study_id, ticket)
        pipe = self.client.pipeline()
        pipe.zadd(_key(study_id, "runs"), {run_id: ticket})
        self.save_trial(study_id, TrialRecord(run_id=run_id, ticket=ticket), pipe=pipe)
        pipe.execute()
        spec: JsonObject = {"study_id": study_id, "ticket": ticket}
        enqueue_job(self.client, "study_trial", run_id, spec, description=f"trial of {study_id}")
        return run_id

    def finish_trial(self, study_id: str, run_id: str, *, now: float | None = None) -> NextStep:
        """Count the trial `run_id` as ended (a second call for it changes nothing) and act on
        what the study needs next: enqueue the next trial, or hand out the finalization. One
        atomic step, so racing workers never issue a ticket twice or finalize twice."""
        keys = [
            _key(study_id, "done"),
            _key(study_id, "issued"),
            _key(study_id, "plan"),
            cancel_key(study_id),
            _key(study_id, "finalize"),
        ]
        at = time.time() if now is None else now
        raw = self.client.eval(_FINISH, len(keys), *keys, run_id, f"{at:.3f}")
        step, ticket = _text(raw[0]), int(raw[1])
        if step == "enqueue":
            self.enqueue_trial(study_id, ticket)
            return "enqueue"
        if step == "finalize":
            self.enqueue_finalize(study_id)
            return "finalize"
        return "none"

    def fail_trial(self, study_id: str, run_id: str) -> NextStep:
        """A trial that ended without its job (the stale-run sweep gave up on it, or ended it
        cancelled while its worker was dead): record it failed, then count it
        (`finish_trial`). Optuna still shows it running until the finalization fails it with
        the other orphans."""
        record = self.trial(study_id, run_id)
        if record is not None and record.state == "RUNNING":
            self.save_trial(study_id, record.model_copy(update={"state": "FAIL"}))
            # its job never applied the study's retention: whoever runs next does (before the
            # trial issued below writes its first checkpoint, so the budget holds)
            self.client.sadd(_key(study_id, "given_up"), run_id)
        step = self.finish_trial(study_id, run_id)
        _log.warning(
            "trial given up on, counted as failed",
            extra={"event": "study.trial_given_up", "run_id": run_id, "next": step},
        )
        return step

    def take_given_up(self, study_id: str) -> list[str]:
        """The trials given up on since the last call (`fail_trial`), each handed out once."""
        key = _key(study_id, "given_up")
        pipe = self.client.pipeline()  # MULTI: a trial given up meanwhile waits for the next
        pipe.smembers(key)
        pipe.delete(key)
        members, _ = pipe.execute()
        return sorted(_text(member) for member in members)

    def enqueue_finalize(self, study_id: str) -> None:
        """The study's last job: evaluate the best trial, write the report, end the study."""
        Queue(TRAINING_QUEUE, connection=self.client).enqueue(
            FINALIZE_FUNCTION,
            args=(study_id,),
            job_id=f"{study_id}--finalize-{int(time.time() * 1000)}",
            job_timeout=-1,
            result_ttl=RESULT_TTL_S,
            failure_ttl=FAILURE_TTL_S,
            description=f"finalize {study_id}",
        )

    def cancel(self, study_id: str, *, bus: EventBus | None = None) -> list[str]:
        """Stop issuing trials and cancel the running ones (the runs' own cancellation path);
        the trials cancelled. NOT_FOUND / CONFLICT as for a run."""
        status = self.status(study_id)
        if status.is_terminal:
            raise AppError(ErrorCode.CONFLICT, f"study {study_id} already {status}")
        # the flag alone: the study has no job, so the run sweeps must not force-stop it
        self.client.set(cancel_key(study_id), f"{time.time():.3f}")
        touched: list[str] = []
        for run_id in self.trial_run_ids(study_id):
            trial_status = self.runs.status(run_id)
            if trial_status is None or trial_status.is_terminal:
                # counted once, whoever ends it (its job, the stale-run sweep's give-up, or
                # this): a second count changes nothing
                self.finish_trial(study_id, run_id)
                continue
            outcome = request_cancel(self.client, run_id, bus=bus)
            touched.append(run_id)
            if outcome == "cancelled":  # it never started: nobody else will count it
                self.finish_trial(study_id, run_id)
        return touched

    def cancel_requested(self, study_id: str) -> bool:
        return bool(self.client.exists(cancel_key(study_id)))

    def status(self, study_id: str) -> RunStatus:
        status = self.runs.status(study_id)
        if status is None or self.runs.meta(study_id).get("kind") != STUDY_KIND:
            raise AppError(ErrorCode.NOT_FOUND, f"study {study_id} does not exist")
        return status

    def spec(self, study_id: str) -> StudySpec:
        raw = self.runs.spec_json(study_id)
        if raw is None:
            raise AppError(ErrorCode.NOT_FOUND, f"study {study_id} does not exist")
        return StudySpec.model_validate_json(raw)

    def trial_run_ids(self, study_id: str) -> list[str]:
        return [_text(r) for r in self.client.zrange(_key(study_id, "runs"), 0, -1)]

    def save_trial(
        self, study_id: str, record: TrialRecord, *, pipe: redis.client.Pipeline | None = None
    ) -> None:
        """Record the trial (as part of `pipe`'s transaction when given)."""
        target = self.client if pipe is None else pipe
        target.hset(_key(study_id, "trials"), record.run_id, record.model_dump_json())

    def trial(self, study_id: str, run_id: str) -> TrialRecord | None:
        raw = self.client.hget(_key(study_id, "trials"), run_id)
        return None if raw is None else TrialRecord.model_validate_json(_text(raw))

    def kept_trial(self, study_id: str) -> TrialRecord | None:
        """The ended trial whose checkpoint the study keeps (the best so far)."""
        raw = self.client.get(_key(study_id, "kept"))
        return None if raw is None else TrialRecord.model_validate_json(_text(raw))

    def set_kept_trial(self, study_id: str, record: TrialRecord) -> None:
        self.client.set(_key(study_id, "kept"), record.model_dump_json())

    def trials(self, study_id: str) -> list[TrialRecord]:
        raw = self.client.hgetall(_key(study_id, "trials"))
        records = [TrialRecord.model_validate_json(_text(v)) for v in raw.values()]
        return sorted(records, key=lambda r: r.ticket)

    def view(self, study_id: str) -> StudyView:
        status = self.status(study_id)
        spec = self.spec(study_id)
        trials = self.trials(study_id)
        meta = self.runs.meta(study_id)
        owner, created = meta.get("user_id"), meta.get("created_at")
        return StudyView(
            study_id=study_id,
            status=status,
            spec=spec,
            message=self.runs.message(study_id),
            trials=trials,
            best=best_trial(trials, spec.direction),
            user_id=int(owner) if owner else None,
            created_at=float(created) if created else None,
        )


def _text(raw: object) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
