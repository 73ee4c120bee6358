"""The event bus against a real Redis server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio

from platform_core.event_bus import AsyncEventBus, EventBus
from platform_core.events import (
    Event,
    JobProgress,
    JobProgressPayload,
    decode_event,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _progress(i: int) -> JobProgress:
    return JobProgress(run_id=f"run-{i}", payload=JobProgressPayload(step=i, epoch=0, fraction=0))


def test_publish_then_read_1000_in_order(redis_client: redis.Redis) -> None:
    bus = EventBus(redis_client)
    ids = [bus.publish(_progress(i)) for i in range(1000)]
    seen: list[Event] = []
    after = "0-0"
    while batch := bus.read(after, count=300):
        seen.extend(d.event for d in batch)
        after = batch[-1].id
    assert [e.run_id for e in seen] == [f"run-{i}" for i in range(1000)]
    assert after == ids[-1]
    assert seen[7] == decode_event(seen[7].model_dump_json())


def test_read_resumes_after_an_id_and_blocks_briefly_when_empty(redis_client: redis.Redis) -> None:
    bus = EventBus(redis_client)
    assert bus.last_id() == "0-0"
    first = bus.publish(_progress(1))
    assert bus.last_id() == first
    bus.publish(_progress(2))
    assert [d.event.run_id for d in bus.read(first)] == ["run-2"]
    last = bus.read(first)[-1].id
    assert bus.read(last, block_ms=20) == []


def test_stream_is_capped(redis_client: redis.Redis) -> None:
    bus = EventBus(redis_client, maxlen=1000)
    for i in range(3000):
        bus.publish(_progress(i))
    assert 1000 <= redis_client.xlen(bus.stream) < 1500


def test_group_consume_ack_and_undecodable_entries(redis_client: redis.Redis) -> None:
    bus = EventBus(redis_client)
    bus.ensure_group("g")
    bus.ensure_group("g")  # idempotent
    bus.publish(_progress(1))
    redis_client.xadd(bus.stream, {"type": "bogus", "data": b"{not json"})
    bus.publish(_progress(2))
    got = bus.consume("g", "c1", count=10)
    assert [d.event.run_id for d in got] == ["run-1", "run-2"]
    # the bad entry is parked in the dead-letter stream and acknowledged
    assert redis_client.xlen(f"{bus.stream}:dead") == 1
    assert bus.ack("g", [d.id for d in got]) == 2
    assert bus.ack("g", []) == 0
    assert redis_client.xpending(bus.stream, "g")["pending"] == 0


def test_ensure_group_reraises_other_errors(redis_client: redis.Redis) -> None:
    redis_client.set("not-a-stream", "x")
    bus = EventBus(redis_client, stream="not-a-stream")
    with pytest.raises(redis.ResponseError):
        bus.ensure_group("g")


def test_run_consumer_retries_a_failed_handler_after_restart(redis_client: redis.Redis) -> None:
    bus = EventBus(redis_client)
    for i in range(3):
        bus.publish(_progress(i))
    handled: list[str] = []
    fail_once = {"run-1"}

    def handler(event: Event) -> None:
        if event.run_id in fail_once:
            fail_once.clear()
            raise RuntimeError("transient")
        handled.append(event.run_id)

    calls = iter(range(3))
    count = bus.run_consumer("g", "c1", handler, should_stop=lambda: next(calls) >= 2, block_ms=10)
    assert count == 2 and handled == ["run-0", "run-2"]
    # restart: the pending list holds run-1 and it is handled now, nothing else twice
    calls = iter(range(3))
    count = bus.run_consumer("g", "c1", handler, should_stop=lambda: next(calls) >= 2, block_ms=10)
    assert count == 1 and handled == ["run-0", "run-2", "run-1"]


def test_claim_stale_takes_over_a_dead_consumers_entries(redis_client: redis.Redis) -> None:
    bus = EventBus(redis_client)
    bus.ensure_group("g", start_id="0")
    for i in range(250):
        bus.publish(_progress(i))
    assert len(bus.consume("g", "dead", count=1000)) == 250  # delivered, never acked
    assert bus.claim_stale("g", "alive", min_idle_ms=0, count=100) == 250
    taken = bus.consume("g", "alive", count=1000, after="0")
    assert len(taken) == 250


def test_killed_consumer_loses_nothing_and_repeats_no_acknowledged_event(
    redis_client: redis.Redis, redis_url: str
) -> None:
    bus = EventBus(redis_client, stream="crash:events")
    bus.ensure_group("bot", start_id="0")
    for i in range(1000):
        bus.publish(_progress(i))

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.platform_core.bus_consumer_main",
                redis_url,
                bus.stream,
                "bot",
                "c1",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    first = start()
    deadline = time.monotonic() + 60
    while redis_client.llen("handled") < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = redis_client.llen("handled")
    assert 300 <= killed_at < 1000, "the consumer must be killed midway"
    pending = redis_client.xpending_range(bus.stream, "bot", min="-", max="+", count=1000)
    run_of = {d.id: d.event.run_id for d in bus.read(count=1000)}
    pending_runs = {run_of[_text(item["message_id"])] for item in pending}

    second = start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        redis_client.xpending(bus.stream, "bot")["pending"] > 0
        or len(set(redis_client.lrange("handled", 0, -1))) < 1000
    ):
        time.sleep(0.02)
    second.terminate()
    assert second.wait(10) == 0

    handled = [_text(r) for r in redis_client.lrange("handled", 0, -1)]
    assert set(handled) == {f"run-{i}" for i in range(1000)}
    repeated = {r for r in handled if handled.count(r) > 1}
    assert repeated <= pending_runs  # only unacknowledged entries may be handled again
    first_seen = list(dict.fromkeys(handled))
    assert first_seen == [f"run-{i}" for i in range(1000)]


def test_async_bus(redis_url: str, redis_client: redis.Redis) -> None:
    async def scenario() -> tuple[list[str], list[str], int, int]:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            bus = AsyncEventBus(client, stream="async:events")
            first = await bus.publish(_progress(0))
            await bus.publish(_progress(1))
            await client.xadd(bus.stream, {"type": "x", "data": b"[]"})
            read = [d.event.run_id for d in await bus.read(first, block_ms=10)]
            await bus.ensure_group("g", start_id="0")
            await bus.ensure_group("g", start_id="0")
            handled: list[str] = []

            async def handler(event: Event) -> None:
                if event.run_id == "run-0" and "boom" not in handled:
                    handled.append("boom")
                    raise RuntimeError("fails once")
                handled.append(event.run_id)

            calls = iter(range(10))
            n1 = await bus.run_consumer(
                "g", "c", handler, should_stop=lambda: next(calls) >= 2, block_ms=10
            )
            calls = iter(range(10))
            n2 = await bus.run_consumer(
                "g", "c", handler, should_stop=lambda: next(calls) >= 2, block_ms=10
            )
            assert await bus.ack("g", []) == 0
            return read, handled, n1, n2
        finally:
            await client.aclose()

    read, handled, n1, n2 = asyncio.run(scenario())
    assert read == ["run-1"]
    assert handled == ["boom", "run-1", "run-0"]
    assert (n1, n2) == (1, 1)
    assert redis_client.xlen("async:events:dead") == 1


def test_async_ensure_group_reraises_other_errors(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.set("plain-key", "x")

    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await AsyncEventBus(client, stream="plain-key").ensure_group("g")
        finally:
            await client.aclose()

    with pytest.raises(redis.ResponseError):
        asyncio.run(scenario())


def test_resp3_and_decoding_clients_read_the_same_events(
    redis_url: str, redis_client: redis.Redis
) -> None:
    EventBus(redis_client).publish(_progress(1))
    for client in (
        redis.Redis.from_url(redis_url, protocol=3),
        redis.Redis.from_url(redis_url, decode_responses=True),
    ):
        bus = EventBus(client)
        assert [d.event.run_id for d in bus.read()] == ["run-1"]
        bus.ensure_group("g3", start_id="0")
        assert [d.event.run_id for d in bus.consume("g3", f"c-{id(client)}", count=5)] == ["run-1"]
        bus.client.xgroup_destroy(bus.stream, "g3")
        client.close()


def test_pending_entries_trimmed_away_are_skipped(redis_client: redis.Redis) -> None:
    bus = EventBus(redis_client)
    bus.ensure_group("g", start_id="0")
    bus.publish(_progress(1))
    assert len(bus.consume("g", "c", count=10)) == 1
    redis_client.xtrim(bus.stream, maxlen=0)  # MAXLEN trimming can drop an unacked entry
    bus.publish(_progress(2))
    assert bus.consume("g", "c", after="0") == []
    assert redis_client.xpending(bus.stream, "g")["pending"] == 0  # acknowledged, not stuck
    assert redis_client.xlen(f"{bus.stream}:dead") == 0  # and not mistaken for a bad event
    assert [d.event.run_id for d in bus.consume("g", "c")] == ["run-2"]
