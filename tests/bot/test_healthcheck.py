"""The bot's heartbeat, stamped by the real notifier loops in a real Redis, and the container's
health check that reads it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from pathlib import Path

import pytest
import redis

from platform_core.event_bus import AsyncEventBus
from platform_core.redis_connection import connect_async
from tests.bot import factories
from tests.bot.discord_standin import OWNER_ID
from tests.bot.helpers import FAST, WAIT_S, publish, run_until
from trainer_bot import healthcheck
from trainer_bot.heartbeat import MAX_AGE_S, heartbeat_key, unhealthy_reason
from trainer_bot.notifier import Notifier
from trainer_bot.outbox import OutgoingMessage
from trainer_bot.senders import ConsoleSender
from trainer_bot.watch_store import WATCHING_KEY, WatchStore

pytestmark = pytest.mark.integration
KEY = heartbeat_key(socket.gethostname())
BEAT_FAST = dataclasses.replace(FAST, heartbeat_every_s=0.05)


class StuckSender:
    """A send that never returns, as when Discord holds a request open forever."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def send(self, recipient: int, message: OutgoingMessage) -> int:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def edit(self, recipient: int, message_id: int, message: OutgoingMessage) -> None:
        await self.send(recipient, message)


def stamps(client: redis.Redis) -> dict[str, float]:
    fields = client.hgetall(KEY)
    return {loop: float(fields[loop.encode()]) for loop in ("consume", "deliver")}


@pytest.fixture
def check_env(redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`healthcheck.main()` pointed at the test Redis, from a folder with no .env."""
    monkeypatch.delenv("APP__REDIS__URL", raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.chdir(tmp_path)


def test_the_notifier_loops_stamp_the_heartbeat_and_the_check_passes_until_it_is_stale(
    redis_url: str,
    redis_client: redis.Redis,
    check_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    deliver_stamps: set[bytes | str | None] = set()

    def idle_delivery_stamped_again() -> bool:
        # nothing to send for the hour until the next summary: the loop still goes round
        deliver_stamps.add(redis_client.hget(KEY, "deliver"))
        return len(deliver_stamps - {None}) >= 2 and redis_client.hlen(KEY) == 3

    async def scenario() -> None:
        client = await connect_async(redis_url)
        bus = AsyncEventBus(client)
        notifier = Notifier(bus, WatchStore(client), ConsoleSender(), OWNER_ID, BEAT_FAST)
        await run_until(notifier, idle_delivery_stamped_again)
        await client.aclose()

    asyncio.run(scenario())
    assert healthcheck.main() == 0
    assert capsys.readouterr().out == "healthy\n"
    assert 0 < redis_client.ttl(KEY) <= MAX_AGE_S  # a stopped bot leaves nothing behind
    later = max(stamps(redis_client).values()) + MAX_AGE_S + 1
    reason = unhealthy_reason(redis_client.hgetall(KEY), later)
    assert reason is not None and reason.startswith("the notifier's consume loop has not gone")
    redis_client.delete(KEY)
    assert healthcheck.main() == 1
    assert capsys.readouterr().out.startswith("unhealthy: no heartbeat")


def test_a_stuck_delivery_loop_fails_the_check_while_reading_goes_on(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    publish(redis_client, factories.queued())
    sender = StuckSender()

    async def scenario() -> None:
        client = await connect_async(redis_url)
        bus = AsyncEventBus(client)
        notifier = Notifier(bus, WatchStore(client), sender, OWNER_ID, BEAT_FAST)
        running = asyncio.create_task(notifier.run())
        async with asyncio.timeout(WAIT_S):
            await sender.started.wait()
        await asyncio.sleep(0.6)  # the reading loop goes round (and stamps) meanwhile
        running.cancel()  # stop() cannot end a send that never returns; a restart would
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await client.aclose()

    asyncio.run(scenario())
    stamped = stamps(redis_client)
    assert stamped["consume"] - stamped["deliver"] > 0.4  # reading went on, delivery did not
    reason = unhealthy_reason(redis_client.hgetall(KEY), stamped["consume"], max_age_s=0.3)
    assert reason is not None and reason.startswith("the notifier's deliver loop has not gone")


def test_a_missing_loop_or_a_dropped_session_is_unhealthy() -> None:
    now = time.time()
    fresh = f"{now:.3f}".encode()
    assert unhealthy_reason({b"consume": fresh, b"connected": b"1"}, now) == (
        "the notifier's deliver loop has not stamped the heartbeat yet"
    )
    both: dict[bytes | str, bytes | str] = {b"consume": fresh, b"deliver": fresh}
    assert unhealthy_reason(both | {b"connected": b"1"}, now) is None
    assert unhealthy_reason(both | {b"connected": b"0"}, now) == (
        "not connected to the Discord gateway"
    )


def test_without_redis_configured_or_reachable_it_fails_with_the_reason(
    check_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL")
    assert healthcheck.main() == 2
    assert "REDIS_URL is not set" in capsys.readouterr().err
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert healthcheck.main() == 1
    assert "REDIS_UNAVAILABLE" in capsys.readouterr().err
