"""GET /runs/{id}/events: a run's events as SSE from the bus, resumable with Last-Event-ID,
ending after the run's terminal event."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import aclosing

import httpx
import pytest
import redis

from platform_core import api_calls
from platform_core.errors import ErrorCode, FailureClass
from platform_core.event_bus import EventBus
from platform_core.events import (
    Event,
    JobCancelled,
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
)
from platform_core.http_client import ApiError, AsyncTrainerClient, StreamedEvent, TrainerClient
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.settings import Settings
from tests.api.conftest import LiveApi, char_tokenizer, serve, tiny_run, work
from trainer_api import streams

pytestmark = pytest.mark.integration


def _progress(run_id: str, step: int) -> JobProgress:
    payload = JobProgressPayload(step=step, total_steps=10, epoch=0.0, fraction=step / 10)
    return JobProgress(run_id=run_id, payload=payload)


def _lifecycle(run_id: str) -> list[Event]:
    return [
        JobQueued(run_id=run_id, payload=JobQueuedPayload(kind="train_model", queue="training")),
        JobStarted(
            run_id=run_id, payload=JobStartedPayload(kind="train_model", worker="w", attempt=1)
        ),
        *(_progress(run_id, step) for step in (1, 2, 3)),
        JobCompleted(run_id=run_id, payload=JobCompletedPayload(duration_s=1.0)),
    ]


def _start_run(client: redis.Redis, run_id: str) -> None:
    store = RunStateStore(client)
    store.set_meta(run_id, kind="train_model", user_id=None, spec_json="{}")
    store.set_status(run_id, RunStatus.QUEUED)


def test_events_resume_after_the_last_event_id_and_end_at_the_terminal_one(
    client: TrainerClient, redis_client: redis.Redis
) -> None:
    _start_run(redis_client, "run-e")
    bus = EventBus(redis_client)
    bus.publish(_progress("other-run", 1))  # another run's events are not shown
    events = _lifecycle("run-e")
    ids = [bus.publish(event) for event in events]
    bus.publish(_progress("run-e", 9))  # after the terminal event: never reached

    first: list[StreamedEvent] = []
    for streamed in client.stream_events("run-e"):
        first.append(streamed)
        if len(first) == 3:
            break  # the connection drops here
    assert [s.id for s in first] == ids[:3]
    assert [s.event for s in first] == events[:3]

    rest = list(client.stream_events("run-e", last_event_id=first[-1].id))
    assert [s.id for s in rest] == ids[3:]
    assert rest[-1].event.type == "trainer.job.completed.v1"


def test_live_events_arrive_as_they_are_published(
    client: TrainerClient, redis_client: redis.Redis
) -> None:
    _start_run(redis_client, "run-live")
    bus = EventBus(redis_client)
    events = _lifecycle("run-live")

    def publish_later() -> None:
        for event in events:
            time.sleep(0.05)
            bus.publish(event)

    publisher = threading.Thread(target=publish_later)
    publisher.start()
    received = [s.event for s in client.stream_events("run-live")]
    publisher.join()
    assert received == events


def test_a_failure_that_is_retried_does_not_end_the_stream(
    client: TrainerClient, redis_client: redis.Redis
) -> None:
    _start_run(redis_client, "run-f")
    bus = EventBus(redis_client)

    def failed(retrying: bool) -> JobFailed:
        payload = JobFailedPayload(
            error_code=ErrorCode.REDIS_UNAVAILABLE,
            failure_class=FailureClass.TRANSIENT,
            message="blip",
            retrying=retrying,
        )
        return JobFailed(run_id="run-f", payload=payload)

    for event in (failed(True), _progress("run-f", 1), failed(False)):
        bus.publish(event)
    received = [s.event for s in client.stream_events("run-f")]
    assert [getattr(e.payload, "retrying", None) for e in received] == [True, None, False]


def test_a_finished_run_without_a_terminal_event_ends_after_a_grace(
    client: TrainerClient, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "FINISH_GRACE_S", 0.0)  # ends at the first quiet read
    _start_run(redis_client, "run-trimmed")
    RunStateStore(redis_client).set_status("run-trimmed", RunStatus.CANCELLED)
    EventBus(redis_client).publish(_progress("run-trimmed", 1))
    assert [s.event.type for s in client.stream_events("run-trimmed")] == [
        "trainer.job.progress.v1"
    ]


def test_async_client_streams_events(live_api: LiveApi, redis_client: redis.Redis) -> None:
    _start_run(redis_client, "run-a")
    bus = EventBus(redis_client)
    events = _lifecycle("run-a")
    ids = [bus.publish(event) for event in events]

    async def follow() -> tuple[list[str], list[str]]:
        async with AsyncTrainerClient(live_api.base_url) as client:
            first: list[str] = []
            async with aclosing(client.stream_events("run-a")) as stream:
                async for streamed in stream:
                    first.append(streamed.id)
                    if len(first) == 2:
                        break
            rest = [s.id async for s in client.stream_events("run-a", last_event_id=first[-1])]
            return first, rest

    first, rest = asyncio.run(follow())
    assert first + rest == ids


def test_unknown_run_and_bad_last_event_id(client: TrainerClient, live_api: LiveApi) -> None:
    with pytest.raises(ApiError) as unknown:
        next(iter(client.stream_events("no-such-run")))
    assert (unknown.value.status, unknown.value.error_code) == (404, ErrorCode.NOT_FOUND)

    response = httpx.get(
        f"{live_api.base_url}/runs/no-such-run/events", headers={"Last-Event-ID": "yesterday"}
    )
    assert response.status_code == 422
    assert "last-event-id" in response.json()["message"]


def test_a_quiet_stream_sends_keep_alives(
    api_settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "KEEP_ALIVE_S", 0.0)
    monkeypatch.setattr(streams, "FINISH_GRACE_S", 0.0)
    # a short Redis timeout makes the blocking reads short: 0.2 s -> 100 ms
    redis_settings = api_settings.redis.model_copy(update={"connect_timeout_s": 0.2})
    _start_run(redis_client, "run-quiet")
    chunks: list[str] = []
    for api in serve(api_settings.model_copy(update={"redis": redis_settings})):
        with httpx.stream("GET", f"{api.base_url}/runs/run-quiet/events") as response:
            for chunk in response.iter_text():
                if not chunks:  # the first keep-alive arrived: now the run ends
                    RunStateStore(redis_client).set_status("run-quiet", RunStatus.CANCELLED)
                chunks.append(chunk)
    body = "".join(chunks)
    assert body.startswith(": keep-alive\n\n")
    assert "event:" not in body  # nothing but keep-alives, then the end


def test_a_configured_stream_carries_a_submitted_runs_events_end_to_end(
    api_settings: Settings,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    corpus: str,
) -> None:
    """`APP__REDIS__EVENTS_STREAM`: the API queues onto it, the worker's job publishes on it
    and the events endpoint reads it; the default stream stays empty."""
    monkeypatch.setenv("APP__REDIS__EVENTS_STREAM", "custom:events")  # read by the job too
    settings = api_settings.model_copy(
        update={"redis": api_settings.redis.model_copy(update={"events_stream": "custom:events"})}
    )
    for api in serve(settings):
        with TrainerClient(api.base_url, backoff_s=0.0) as trainer:
            accepted = trainer.train_tokenizer(char_tokenizer(corpus, "tok-custom"))
            work(redis_client)
            streamed = [s.event for s in trainer.stream_events(accepted.run_id)]
            run = trainer.train_model(tiny_run("tok-custom", corpus, run_id="run-custom"))
            assert trainer.cancel_run(run.run_id).outcome == "cancelled"  # queued: at once
    custom = [d.event for d in EventBus(redis_client, stream="custom:events").read()]
    assert streamed == custom[: len(streamed)]
    assert [type(e) for e in streamed[:2]] == [JobQueued, JobStarted]
    assert isinstance(streamed[-1], JobCompleted)
    # the model run's queued and cancelled events, published by the API's own handlers
    assert [(type(e), e.run_id) for e in custom[len(streamed) :]] == [
        (JobQueued, "run-custom"),
        (JobCancelled, "run-custom"),
    ]
    assert redis_client.xlen("trainer:events") == 0


def test_a_stream_id_redis_cannot_read_is_refused_before_the_stream(
    live_api: LiveApi, redis_client: redis.Redis
) -> None:
    """99999999999999999999-0 matches the declared pattern but is past 2**64 - 1: Redis
    answered "Invalid stream ID" after the 200 and the connection dropped."""
    _start_run(redis_client, "run-big")
    url = f"{live_api.base_url}/runs/run-big/events"
    for bad in ("99999999999999999999-0", "1-18446744073709551616", "null"):
        response = httpx.get(url, headers={"Last-Event-ID": bad})
        assert (response.status_code, response.json()["code"]) == (422, "INVALID_INPUT")
        assert "last-event-id" in response.json()["message"]


def test_a_bare_millisecond_id_resumes_as_redis_reads_it(
    client: TrainerClient, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Last-Event-ID: 0` (and any `<ms>`) is the stream entry `<ms>-0`: schemathesis sent
    `0` and got a 422 although Redis reads it; now the stream resumes after it."""
    monkeypatch.setattr(streams, "FINISH_GRACE_S", 0.0)
    _start_run(redis_client, "run-ms")
    bus = EventBus(redis_client)
    first = bus.publish(_progress("run-ms", 1))
    bus.publish(_lifecycle("run-ms")[-1])
    every = [s.event.type for s in client.stream_events("run-ms", last_event_id="0")]
    assert every == ["trainer.job.progress.v1", "trainer.job.completed.v1"]
    after_first = client.stream_events("run-ms", last_event_id=first.split("-")[0])
    assert [s.event.type for s in after_first] == ["trainer.job.completed.v1"]


def test_a_resume_point_past_the_newest_event_waits_for_newer_ones(
    client: TrainerClient, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    _start_run(redis_client, "run-late")
    bus = EventBus(redis_client)
    published = bus.publish(_progress("run-late", 1))
    after = f"{int(published.split('-')[0]) + 1}-0"  # newer than anything in the stream

    def publish_later() -> None:
        time.sleep(1.2)  # past the next millisecond and the id above
        bus.publish(_lifecycle("run-late")[-1])

    publisher = threading.Thread(target=publish_later)
    publisher.start()
    received = list(client.stream_events("run-late", last_event_id=after))
    publisher.join()
    assert [s.event.type for s in received] == ["trainer.job.completed.v1"]
    monkeypatch.setattr(streams, "FINISH_GRACE_S", 0.0)
    RunStateStore(redis_client).set_status("run-late", RunStatus.RUNNING)
    RunStateStore(redis_client).set_status("run-late", RunStatus.COMPLETED)
    top = list(client.stream_events("run-late", last_event_id="9999999999999999999-0"))
    assert top == []  # the largest id waits until the run's status ends the stream


def test_a_failure_inside_the_event_stream_ends_it_with_a_typed_error(
    live_api: LiveApi, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    _start_run(redis_client, "run-x")
    EventBus(redis_client).publish(_progress("run-x", 1))

    def broken(event: Event) -> bytes:
        raise redis.exceptions.ConnectionError("gone")

    monkeypatch.setattr(streams, "encode_event", broken)
    url = f"{live_api.base_url}/runs/run-x/events"
    with httpx.stream("GET", url, headers={"X-Request-ID": "req-7"}) as response:
        body = response.read().decode()
    assert response.status_code == 200
    assert body.endswith(
        'event: error\ndata: {"code":"REDIS_UNAVAILABLE","message":"the event store failed '
        '(ConnectionError)","request_id":"req-7"}\n\n'
    )
    with TrainerClient(live_api.base_url) as client, pytest.raises(ApiError) as failed:
        list(client.stream_events("run-x"))
    assert (failed.value.status, failed.value.error_code) == (503, ErrorCode.REDIS_UNAVAILABLE)


def test_recent_events_are_the_runs_newest_of_the_asked_types_oldest_first(
    client: TrainerClient, redis_client: redis.Redis, live_api: LiveApi
) -> None:
    _start_run(redis_client, "run-r")
    bus = EventBus(redis_client)
    events = _lifecycle("run-r")[:-1]  # queued, started, progress 1..3: still running
    ids = [bus.publish(event) for event in events]
    newest = bus.publish(_progress("other-run", 7))  # another run's: looked past, not shown

    progress = "trainer.job.progress.v1"
    recent = client.call(api_calls.recent_events("run-r", [progress], limit=2))
    assert [item.id for item in recent.items] == ids[3:]
    assert [item.event for item in recent.items] == events[3:]
    assert recent.read_at == newest  # everything up to here was looked at
    every = client.call(api_calls.recent_events("run-r", [], limit=50))
    assert [item.event for item in every.items] == events
    later = bus.publish(_progress("run-r", 4))
    again = client.call(api_calls.recent_events("run-r", [progress], limit=1))
    assert ([item.id for item in again.items], again.read_at) == ([later], later)

    with pytest.raises(ApiError) as unknown:
        client.call(api_calls.recent_events("run-none", [], limit=1))
    assert (unknown.value.status, unknown.value.error_code) == (404, ErrorCode.NOT_FOUND)
    for query in ("limit=0", "limit=51", "types=progress", "types=trainer.x.v1;drop"):
        answer = httpx.get(f"{live_api.base_url}/runs/run-r/events/recent?{query}")
        assert answer.status_code == 422, query
        assert answer.json()["code"] == "INVALID_INPUT" and answer.json()["request_id"]
