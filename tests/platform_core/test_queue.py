"""The queue contract against a real Redis, with a real forking RQ worker for the forced stop."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus

from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import Event, JobCancelled, JobFailed, JobQueued
from platform_core.queue import (
    INFERENCE_QUEUE,
    JOB_FUNCTIONS,
    TRAINING_QUEUE,
    TRANSIENT_RETRY,
    enqueue_job,
    force_cancel_if_stuck,
    job_id_for,
    queue_for,
    request_cancel,
    requeue_stale_runs,
    sweep_cancellations,
)
from platform_core.redis_connection import connect
from platform_core.retraining import lock_key
from platform_core.run_state import RunStateStore, RunStatus
from tests.dead_workers import died_running

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def test_job_routing() -> None:
    assert queue_for("train_model") == TRAINING_QUEUE
    assert queue_for("generate") == INFERENCE_QUEUE
    assert queue_for("predict") == INFERENCE_QUEUE
    assert queue_for("prepare_dataset") == TRAINING_QUEUE
    assert queue_for("study_trial") == TRAINING_QUEUE  # a study's trials are training runs
    assert queue_for("compare_models") == queue_for("retrain_model") == TRAINING_QUEUE
    assert set(JOB_FUNCTIONS) == {
        "train_tokenizer",
        "train_model",
        "evaluate",
        "generate",
        "score",
        "predict",
        "prepare_dataset",
        "study_trial",
        "compare_models",
        "retrain_model",
    }
    assert job_id_for("r", 1) == "r"
    assert job_id_for("r", 3) == "r--attempt-3"


def test_enqueue_marks_queued_and_publishes(redis_client: redis.Redis) -> None:
    enqueue_job(
        redis_client, "generate", "gen-1", {"prompt": "hi"}, user_id=5, description="say hi"
    )
    job = Job.fetch("gen-1", connection=redis_client)
    assert job.func_name == JOB_FUNCTIONS["generate"]
    assert job.args == ("gen-1", {"prompt": "hi"})
    assert job.kwargs == {"user_id": 5}
    assert job.origin == INFERENCE_QUEUE
    store = RunStateStore(redis_client)
    assert store.status("gen-1") is RunStatus.QUEUED
    assert store.job_id("gen-1") == "gen-1"
    meta = store.meta("gen-1")
    assert (meta["kind"], meta["user_id"]) == ("generate", "5")
    assert float(meta["created_at"]) > 0
    assert store.spec_json("gen-1") == '{"prompt": "hi"}'
    (delivery,) = EventBus(redis_client).read()
    assert isinstance(delivery.event, JobQueued)
    assert delivery.event.payload.queue == INFERENCE_QUEUE
    assert delivery.event.user_id == 5


def test_a_kind_without_a_job_is_refused_before_anything_is_written(
    redis_client: redis.Redis,
) -> None:
    """ "study" is an event kind, but no worker job runs it yet."""
    with pytest.raises(AppError, match="no worker job runs kind 'study'") as info:
        enqueue_job(redis_client, "study", "study-1", {})
    assert info.value.code is ErrorCode.INVALID_INPUT
    assert RunStateStore(redis_client).status("study-1") is None
    assert EventBus(redis_client).read() == []
    assert Queue(TRAINING_QUEUE, connection=redis_client).count == 0


def test_cancel_events_go_to_the_callers_bus(redis_client: redis.Redis) -> None:
    custom = EventBus(redis_client, stream="custom:events")
    RunStateStore(redis_client).set_status("queued", RunStatus.QUEUED)
    assert request_cancel(redis_client, "queued", bus=custom) == "cancelled"
    (delivery,) = custom.read()
    assert isinstance(delivery.event, JobCancelled)
    assert EventBus(redis_client).read() == []


def test_jobs_carry_rqs_retry_for_transient_failures(redis_client: redis.Redis) -> None:
    enqueue_job(redis_client, "train_model", "later", {}, attempt=2)
    job = Job.fetch("later--attempt-2", connection=redis_client)
    assert job.get_status() is JobStatus.QUEUED
    assert job.retries_left == len(TRANSIENT_RETRY)
    assert job.retry_intervals == list(TRANSIENT_RETRY)
    assert job.kwargs == {"user_id": None}  # the attempt is counted by the run, not passed


@pytest.mark.parametrize("run_id", ["", "a.b", "../x", "-x", "x" * 65, "with space"])
def test_bad_run_ids_are_refused(redis_client: redis.Redis, run_id: str) -> None:
    with pytest.raises(AppError) as info:
        enqueue_job(redis_client, "train_model", run_id, {})
    assert info.value.code is ErrorCode.INVALID_INPUT


def test_cancel_unknown_and_finished_runs(redis_client: redis.Redis) -> None:
    with pytest.raises(AppError) as info:
        request_cancel(redis_client, "ghost")
    assert info.value.code is ErrorCode.NOT_FOUND
    store = RunStateStore(redis_client)
    store.set_status("done", RunStatus.RUNNING)
    store.set_status("done", RunStatus.COMPLETED)
    with pytest.raises(AppError) as info:
        request_cancel(redis_client, "done")
    assert info.value.code is ErrorCode.CONFLICT


def test_cancel_a_queued_run_whose_rq_job_vanished(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    store.set_status("orphan", RunStatus.QUEUED)
    assert request_cancel(redis_client, "orphan", user_id=9) == "cancelled"
    assert store.status("orphan") is RunStatus.CANCELLED
    (delivery,) = EventBus(redis_client).read()
    assert isinstance(delivery.event, JobCancelled) and delivery.event.user_id == 9


def test_running_run_gets_the_flag_then_force_only_after_grace(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    store.set_status("busy", RunStatus.RUNNING)
    assert request_cancel(redis_client, "busy") == "requested"
    assert store.cancel_requested("busy")
    assert not force_cancel_if_stuck(
        redis_client, "busy", requested_at=100.0, grace_s=60, now=120.0
    )
    assert store.status("busy") is RunStatus.RUNNING
    # no RQ job is executing it (its worker died): still marked cancelled, by force
    assert force_cancel_if_stuck(redis_client, "busy", requested_at=100.0, grace_s=60, now=161.0)
    assert store.status("busy") is RunStatus.CANCELLED
    assert not force_cancel_if_stuck(
        redis_client, "busy", requested_at=100.0, grace_s=60, now=999.0
    )
    events = [d.event for d in EventBus(redis_client).read()]
    assert isinstance(events[-1], JobCancelled) and events[-1].payload.stage == "forced"


def test_sweep_forces_only_runs_past_their_grace(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    for run_id in ("old", "new", "done"):
        store.set_status(run_id, RunStatus.RUNNING)
    store.request_cancel("old", now=100.0)
    store.request_cancel("new", now=190.0)
    store.request_cancel("done", now=100.0)
    store.set_status("done", RunStatus.COMPLETED)
    assert sweep_cancellations(redis_client, grace_s=60, now=200.0) == ["old"]
    assert store.status("old") is RunStatus.CANCELLED
    assert store.status("new") is RunStatus.RUNNING
    assert store.status("done") is RunStatus.COMPLETED


def test_forced_stop_kills_a_job_that_ignores_the_flag(
    redis_client: redis.Redis, redis_url: str
) -> None:
    Queue(TRAINING_QUEUE, connection=redis_client).enqueue(
        "tests.job_fixtures.sleepy", args=("stuck", {}), job_id="stuck", job_timeout=-1
    )
    RunStateStore(redis_client).set_job_id("stuck", "stuck")
    worker = subprocess.Popen(
        [sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", redis_url, TRAINING_QUEUE],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        store = RunStateStore(redis_client)
        deadline = time.monotonic() + 30
        while store.status("stuck") is not RunStatus.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        assert request_cancel(redis_client, "stuck") == "requested"
        time.sleep(0.3)  # the job ignores the flag
        assert store.status("stuck") is RunStatus.RUNNING
        assert force_cancel_if_stuck(redis_client, "stuck", requested_at=0.0, grace_s=1)
        assert worker.wait(30) == 0  # the burst worker ends once its work horse was stopped
    finally:
        if worker.poll() is None:
            worker.kill()
    assert Job.fetch("stuck", connection=redis_client).get_status() is JobStatus.STOPPED
    assert store.status("stuck") is RunStatus.CANCELLED


def test_stale_runs_are_requeued_for_their_next_attempt(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    enqueue_job(redis_client, "train_model", "lost", {"model": {}}, user_id=11)
    store.set_status("lost", RunStatus.RUNNING)
    store.beat("lost", now=100.0)
    enqueue_job(redis_client, "train_model", "lost2", {})
    store.set_job_id("lost2", "lost2--attempt-2")  # it was already on its second attempt
    store.set_status("lost2", RunStatus.RUNNING)
    store.set_status("nospec", RunStatus.RUNNING)  # never enqueued through the contract
    store.set_status("alive", RunStatus.RUNNING)
    store.beat("alive", now=195.0)

    assert sorted(requeue_stale_runs(redis_client, stale_after_s=60, now=200.0)) == [
        "lost",
        "lost2",
    ]
    assert store.status("lost") is RunStatus.QUEUED
    assert store.job_id("lost") == "lost--attempt-2"
    job = Job.fetch("lost--attempt-2", connection=redis_client)
    assert job.args == ("lost", {"model": {}})
    assert job.kwargs == {"user_id": 11}
    assert store.job_id("lost2") == "lost2--attempt-3"
    assert store.status("nospec") is RunStatus.RUNNING
    # a second worker sweeping at the same time finds the lock and leaves it alone
    store.set_status("lost", RunStatus.RUNNING)
    assert requeue_stale_runs(redis_client, stale_after_s=60, now=200.0) == []


def test_a_run_cancelled_while_its_worker_was_dead_ends_cancelled(
    redis_client: redis.Redis,
) -> None:
    store = RunStateStore(redis_client)
    enqueue_job(redis_client, "train_model", "dead", {"model": {}}, user_id=4)
    store.set_status("dead", RunStatus.RUNNING)
    store.beat("dead", now=100.0)  # then its worker died
    assert request_cancel(redis_client, "dead") == "requested"  # nobody left to see the flag

    assert requeue_stale_runs(redis_client, stale_after_s=60, now=200.0) == []
    assert store.status("dead") is RunStatus.CANCELLED
    assert store.message("dead") == "cancelled while its worker was gone; not resumed"
    assert store.job_id("dead") == "dead"  # no second attempt was enqueued
    assert Queue(TRAINING_QUEUE, connection=redis_client).job_ids == []
    # its RQ job is cancelled too: RQ never runs it again
    assert Job.fetch("dead", connection=redis_client).get_status() is JobStatus.CANCELED
    assert store.cancel_requests() == []
    assert store.stale_running(older_than_s=60, now=200.0) == []
    last = EventBus(redis_client).read()[-1].event
    assert isinstance(last, JobCancelled)
    assert (last.payload.stage, last.user_id) == ("forced", 4)
    # and the next rounds of either sweep leave it alone
    assert requeue_stale_runs(redis_client, stale_after_s=60, now=999.0) == []
    assert sweep_cancellations(redis_client, grace_s=60, now=999.0) == []


def test_workers_sweeping_together_requeue_each_run_once(
    redis_client: redis.Redis, redis_url: str
) -> None:
    store = RunStateStore(redis_client)
    runs = [f"lost-{i}" for i in range(10)]
    for run_id in runs:
        enqueue_job(redis_client, "train_model", run_id, {})
        store.set_status(run_id, RunStatus.RUNNING)
    barrier = threading.Barrier(4)
    swept: list[str] = []

    def sweep() -> None:
        client = connect(redis_url)
        barrier.wait()
        swept.extend(requeue_stale_runs(client, stale_after_s=60))
        client.close()

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(swept) == sorted(runs)
    queued = [d.event.run_id for d in EventBus(redis_client).read(count=100)]
    assert sorted(queued) == sorted(runs * 2)  # the first enqueue and one resume each
    second_attempts = Queue(TRAINING_QUEUE, connection=redis_client).job_ids
    assert sorted(job for job in second_attempts if "--attempt-" in job) == sorted(
        f"{run_id}--attempt-2" for run_id in runs
    )


class _FinishOnPublish(EventBus):
    """A bus on which publishing the first event ends another run: that run's own worker
    finishing while the sweep is busy with the run before it."""

    def __init__(self, client: redis.Redis, finishes: str) -> None:
        super().__init__(client)
        self._finishes: str | None = finishes

    def publish(self, event: Event) -> str:
        if self._finishes is not None:
            RunStateStore(self.client).set_status(self._finishes, RunStatus.COMPLETED)
            self._finishes = None
        return super().publish(event)


def test_a_run_that_ends_during_the_sweep_is_not_requeued(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    for run_id in ("first", "second"):  # swept in creation order
        enqueue_job(redis_client, "train_model", run_id, {})
        store.set_status(run_id, RunStatus.RUNNING)
    bus = _FinishOnPublish(redis_client, finishes="second")
    assert requeue_stale_runs(redis_client, stale_after_s=60, bus=bus) == ["first"]
    assert store.status("second") is RunStatus.COMPLETED
    assert store.job_id("second") == "second"


def test_sweepers_together_force_a_run_once_and_tell_its_owner(
    redis_client: redis.Redis, redis_url: str
) -> None:
    store = RunStateStore(redis_client)
    store.set_meta("stuck", kind="train_model", user_id=8, spec_json="{}")
    store.set_status("stuck", RunStatus.RUNNING)
    store.request_cancel("stuck", now=100.0)
    barrier = threading.Barrier(4)
    stopped: list[str] = []

    def sweep() -> None:
        client = connect(redis_url)
        barrier.wait()
        stopped.extend(sweep_cancellations(client, grace_s=60, now=200.0))
        client.close()

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stopped == ["stuck"]
    (delivery,) = EventBus(redis_client).read()
    assert isinstance(delivery.event, JobCancelled) and delivery.event.user_id == 8


def test_a_cancellation_another_sweeper_holds_is_left_to_it(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    for run_id in ("held", "unstarted"):
        store.request_cancel(run_id, now=100.0)
    store.set_status("held", RunStatus.RUNNING)
    redis_client.set("runs:sweep-lock:held", "1")  # another worker is sweeping it
    # the other, never started, has nothing for a forced stop to stop
    assert sweep_cancellations(redis_client, grace_s=60, now=200.0) == []
    assert store.status("held") is RunStatus.RUNNING
    redis_client.delete("runs:sweep-lock:held")
    assert sweep_cancellations(redis_client, grace_s=60, now=200.0) == ["held"]


def test_a_forced_stop_loses_to_a_run_that_ended_meanwhile(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RunStateStore(redis_client)
    store.set_job_id("ending", "ending")
    store.set_status("ending", RunStatus.RUNNING)
    read_status = RunStateStore.status

    def ends_after_the_check(self: RunStateStore, run_id: str) -> RunStatus | None:
        found = read_status(self, run_id)
        self.set_status(run_id, RunStatus.COMPLETED)  # its worker finished just then
        return found

    monkeypatch.setattr(RunStateStore, "status", ends_after_the_check)
    assert not force_cancel_if_stuck(redis_client, "ending", requested_at=0.0, grace_s=1, now=9.0)
    monkeypatch.undo()
    assert store.status("ending") is RunStatus.COMPLETED
    assert EventBus(redis_client).read() == []  # no forced cancellation announced


def test_a_run_whose_worker_died_every_attempt_ends_failed(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    enqueue_job(redis_client, "train_model", "doomed", {"model": {}}, user_id=6)
    for _ in range(2):
        store.next_attempt("doomed")  # two attempts started and died
    store.set_status("doomed", RunStatus.RUNNING)
    store.beat("doomed", now=100.0)
    assert requeue_stale_runs(redis_client, stale_after_s=60, now=200.0, max_attempts=3) == [
        "doomed"
    ]
    store.next_attempt("doomed")  # the third attempt starts, and dies too
    store.set_status("doomed", RunStatus.RUNNING)
    redis_client.delete("runs:sweep-lock:doomed")  # the lock expired
    assert requeue_stale_runs(redis_client, stale_after_s=60, now=300.0, max_attempts=3) == []
    assert store.status("doomed") is RunStatus.FAILED
    assert "during each of its 3 attempts" in (store.message("doomed") or "")
    failed = [d.event for d in EventBus(redis_client).read(count=100)][-1]
    assert isinstance(failed, JobFailed) and failed.ends_run
    assert failed.payload.error_code is ErrorCode.TRAINING_FAILED and failed.user_id == 6


def test_a_requeued_run_hands_the_runs_chained_after_it_to_its_next_attempt(
    redis_client: redis.Redis,
) -> None:
    """A chain (`after`): the link's worker died, the sweep requeues it; the next link waits
    for the new attempt, and RQ never starts the dead attempt's job again (its `Retry`)."""
    enqueue_job(redis_client, "train_model", "link", {"model": {}})
    enqueue_job(redis_client, "retrain_model", "verdict", {}, after="link")
    died_running(redis_client, "link", attempts=1, beat_at=100.0)

    assert requeue_stale_runs(redis_client, stale_after_s=60, now=200.0) == ["link"]
    waiting = Job.fetch("verdict", connection=redis_client)
    assert waiting.get_status() is JobStatus.DEFERRED
    assert waiting.dependency_ids == ["link--attempt-2"]
    assert Job.fetch("link--attempt-2", connection=redis_client).dependent_ids == ["verdict"]
    assert Job.fetch("link", connection=redis_client).get_status() is JobStatus.CANCELED
    assert Queue(TRAINING_QUEUE, connection=redis_client).job_ids == ["link--attempt-2"]


def test_a_run_given_up_on_releases_the_runs_chained_after_it(redis_client: redis.Redis) -> None:
    """The link's last attempt died too: it ends failed, and the next link starts (to find it
    ended and say so) instead of waiting for a job that will never end."""
    enqueue_job(redis_client, "train_model", "link", {"model": {}})
    enqueue_job(redis_client, "retrain_model", "verdict", {}, after="link")
    died_running(redis_client, "link", attempts=1, beat_at=100.0)

    assert requeue_stale_runs(redis_client, stale_after_s=60, now=200.0, max_attempts=1) == []
    assert RunStateStore(redis_client).status("link") is RunStatus.FAILED
    assert Job.fetch("link", connection=redis_client).get_status() is JobStatus.CANCELED
    assert Queue(TRAINING_QUEUE, connection=redis_client).job_ids == ["verdict"]


def test_a_run_stopped_by_force_releases_the_runs_chained_after_it(
    redis_client: redis.Redis,
) -> None:
    """RQ holds the dependents of a stopped job for ever: the forced stop starts them (they
    find the run cancelled) instead."""
    enqueue_job(redis_client, "train_model", "link", {"model": {}})
    enqueue_job(redis_client, "retrain_model", "verdict", {}, after="link")
    died_running(redis_client, "link", attempts=1, beat_at=100.0)  # no horse left to stop

    assert force_cancel_if_stuck(redis_client, "link", requested_at=0.0, grace_s=1, now=9.0)
    assert RunStateStore(redis_client).status("link") is RunStatus.CANCELLED
    assert Queue(TRAINING_QUEUE, connection=redis_client).job_ids == ["verdict"]
    # a job RQ no longer knows has nothing chained after it
    RunStateStore(redis_client).set_status("gone", RunStatus.RUNNING)
    assert force_cancel_if_stuck(redis_client, "gone", requested_at=0.0, grace_s=1, now=9.0)


def _verdict_holding_the_lock(client: redis.Redis, run_id: str) -> None:
    """A retraining's verdict run queued behind nothing, holding model "svc"'s lock as
    `request_retrain` leaves it (the spec carries the model's name)."""
    enqueue_job(client, "retrain_model", run_id, {"name": "svc", "train_run": f"{run_id}-t"})
    client.set(lock_key("svc"), run_id)


def test_a_verdict_cancelled_before_it_started_frees_its_models_lock(
    redis_client: redis.Redis,
) -> None:
    _verdict_holding_the_lock(redis_client, "retrain-1")
    assert request_cancel(redis_client, "retrain-1") == "cancelled"
    assert redis_client.get(lock_key("svc")) is None  # not the lock's 24 h


def test_a_verdict_stopped_by_force_frees_its_models_lock(redis_client: redis.Redis) -> None:
    _verdict_holding_the_lock(redis_client, "retrain-2")
    RunStateStore(redis_client).set_status("retrain-2", RunStatus.RUNNING)
    assert request_cancel(redis_client, "retrain-2") == "requested"
    assert redis_client.get(lock_key("svc")) == b"retrain-2"  # still running: still held
    assert force_cancel_if_stuck(redis_client, "retrain-2", requested_at=0.0, grace_s=1)
    assert redis_client.get(lock_key("svc")) is None


@pytest.mark.parametrize("cancelled", [False, True], ids=["given-up", "cancelled-while-dead"])
def test_a_verdict_whose_worker_died_for_good_frees_its_models_lock(
    redis_client: redis.Redis, cancelled: bool
) -> None:
    _verdict_holding_the_lock(redis_client, "retrain-3")
    died_running(redis_client, "retrain-3", attempts=1, beat_at=100.0)
    if cancelled:
        RunStateStore(redis_client).request_cancel("retrain-3")
    assert requeue_stale_runs(redis_client, stale_after_s=60, now=200.0, max_attempts=1) == []
    status = RunStateStore(redis_client).status("retrain-3")
    assert status is (RunStatus.CANCELLED if cancelled else RunStatus.FAILED)
    assert redis_client.get(lock_key("svc")) is None


def test_a_verdict_requeued_or_another_runs_lock_keeps_it(redis_client: redis.Redis) -> None:
    _verdict_holding_the_lock(redis_client, "retrain-4")
    died_running(redis_client, "retrain-4", attempts=1, beat_at=100.0)
    assert requeue_stale_runs(redis_client, stale_after_s=60, now=200.0) == ["retrain-4"]
    assert redis_client.get(lock_key("svc")) == b"retrain-4"  # its next attempt will free it

    enqueue_job(redis_client, "retrain_model", "retrain-5", {"name": "svc"})
    assert request_cancel(redis_client, "retrain-5") == "cancelled"
    assert redis_client.get(lock_key("svc")) == b"retrain-4"  # not the cancelled run's lock
    enqueue_job(redis_client, "train_model", "train-6", {"name": "svc"})
    redis_client.set(lock_key("svc"), "train-6")
    assert request_cancel(redis_client, "train-6") == "cancelled"
    assert redis_client.get(lock_key("svc")) == b"train-6"  # only a verdict frees a lock
