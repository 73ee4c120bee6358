"""The train_tokenizer job through RQ (SimpleWorker, in-process) and a real Redis: lifecycle
status, events in order, failure classification and bounded retries of transient failures."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import Job

from platform_core import queue
from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import Event, JobFailed, JobStarted
from platform_core.json_types import JsonObject
from platform_core.queue import TRAINING_QUEUE, enqueue_job, request_cancel
from platform_core.run_state import RunStateStore, RunStatus
from trainer_worker import defaults, jobs
from trainer_worker.tokenizers.artifacts import train_tokenizer_artifact

pytestmark = pytest.mark.integration

SPEC: JsonObject = {"kind": "bpe", "vocab_size": 300, "corpus": {"holdout_fraction": 0.1}}


@pytest.fixture(autouse=True)
def worker_env(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> None:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.setattr(queue, "TRANSIENT_RETRY", (0, 0))  # retry at once in burst mode
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)


def _work(client: redis.Redis) -> None:
    SimpleWorker([Queue(TRAINING_QUEUE, connection=client)], connection=client).work(burst=True)


def _events(client: redis.Redis) -> list[Event]:
    return [d.event for d in EventBus(client).read(count=1000)]


def _types(events: list[Event]) -> list[str]:
    return [e.type.split(".")[2] for e in events]


def test_tokenizer_job_completes_with_events_and_artifacts(
    redis_client: redis.Redis, data_root: Path
) -> None:
    enqueue_job(redis_client, "train_tokenizer", "tok-1", SPEC, user_id=42)
    _work(redis_client)
    store = RunStateStore(redis_client)
    assert store.status("tok-1") is RunStatus.COMPLETED
    assert "bpe tokenizer, vocab 300" in (store.message("tok-1") or "")
    assert store.last_heartbeat("tok-1") is not None
    events = _events(redis_client)
    assert _types(events) == ["queued", "started", "progress", "progress", "completed"]
    assert all(e.run_id == "tok-1" and e.user_id == 42 for e in events)
    result = Job.fetch("tok-1", connection=redis_client).return_value()
    assert result is not None and result["status"] == "completed"
    assert result["vocab_size"] == 300
    assert (data_root / "tokenizers" / "tok-1" / "manifest.json").is_file()


def test_bad_spec_fails_fast_as_user_input_with_no_artifacts(
    redis_client: redis.Redis, data_root: Path
) -> None:
    enqueue_job(redis_client, "train_tokenizer", "tok-bad", {"kind": "wordpiece"})
    _work(redis_client)
    store = RunStateStore(redis_client)
    assert store.status("tok-bad") is RunStatus.FAILED
    assert "kind" in (store.message("tok-bad") or "")
    failed = _events(redis_client)[-1]
    assert isinstance(failed, JobFailed)
    assert failed.payload.failure_class == "USER_INPUT"
    assert failed.payload.error_code is ErrorCode.INVALID_INPUT
    assert not failed.payload.retrying
    assert not (data_root / "tokenizers").exists() or not any((data_root / "tokenizers").iterdir())


def test_missing_corpus_is_user_input(redis_client: redis.Redis) -> None:
    spec: JsonObject = {"kind": "char", "corpus": {"path": "nowhere.txt"}}
    enqueue_job(redis_client, "train_tokenizer", "tok-nocorpus", spec)
    _work(redis_client)
    failed = _events(redis_client)[-1]
    assert isinstance(failed, JobFailed)
    assert failed.payload.error_code is ErrorCode.DATA_NOT_FOUND


def test_transient_failure_is_retried_then_succeeds(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_tokenizer_artifact
    calls: list[int] = []

    def flaky(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise AppError(ErrorCode.UPSTREAM_UNAVAILABLE, "storage hiccup")
        return real(*args, **kwargs)  # type: ignore[arg-type]  # passes the job's own arguments through

    monkeypatch.setattr(jobs, "train_tokenizer_artifact", flaky)
    enqueue_job(redis_client, "train_tokenizer", "tok-retry", SPEC)
    _work(redis_client)
    assert RunStateStore(redis_client).status("tok-retry") is RunStatus.COMPLETED
    events = _events(redis_client)
    assert _types(events) == [
        "queued",
        "started",
        "progress",
        "failed",
        "started",
        "progress",
        "progress",
        "completed",
    ]
    failed = events[3]
    assert isinstance(failed, JobFailed) and failed.payload.retrying
    assert not failed.ends_run
    restarted = events[4]
    assert isinstance(restarted, JobStarted) and restarted.payload.attempt == 2
    # RQ retried the job itself: one job, one result
    assert Job.fetch("tok-retry", connection=redis_client).return_value() is not None


def test_transient_failures_stop_after_the_bound(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    def always_down(*_args: object, **_kwargs: object) -> object:
        raise AppError(ErrorCode.UPSTREAM_UNAVAILABLE, "still down")

    monkeypatch.setattr(jobs, "train_tokenizer_artifact", always_down)
    enqueue_job(redis_client, "train_tokenizer", "tok-down", SPEC)
    _work(redis_client)
    assert RunStateStore(redis_client).status("tok-down") is RunStatus.FAILED
    failures = [e for e in _events(redis_client) if isinstance(e, JobFailed)]
    assert [f.payload.retrying for f in failures] == [True] * len(queue.TRANSIENT_RETRY) + [False]


def test_a_crash_is_fatal_and_not_retried(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_args: object, **_kwargs: object) -> object:
        raise KeyError("bug")

    monkeypatch.setattr(jobs, "train_tokenizer_artifact", crash)
    enqueue_job(redis_client, "train_tokenizer", "tok-crash", SPEC)
    _work(redis_client)
    failed = _events(redis_client)[-1]
    assert isinstance(failed, JobFailed)
    assert failed.payload.failure_class == "FATAL"
    assert failed.payload.error_code is ErrorCode.INTERNAL
    assert "KeyError" in failed.payload.message


def test_a_run_cancelled_while_queued_never_starts(redis_client: redis.Redis) -> None:
    enqueue_job(redis_client, "train_tokenizer", "tok-cancel", SPEC)
    assert request_cancel(redis_client, "tok-cancel") == "cancelled"
    _work(redis_client)
    assert RunStateStore(redis_client).status("tok-cancel") is RunStatus.CANCELLED
    assert _types(_events(redis_client)) == ["queued", "cancelled"]


def test_job_outside_a_worker_is_refused() -> None:
    with pytest.raises(AppError, match="inside an RQ worker"):
        jobs.train_tokenizer("x", SPEC)
