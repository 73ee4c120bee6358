"""The notifier against a real Redis: events of watched runs become DMs, everything is
acknowledged only once sent, and a burst stays within Discord's limits."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import redis
import redis.asyncio

from platform_core.event_bus import AsyncEventBus
from platform_core.redis_connection import connect_async
from tests.bot import factories
from tests.bot.discord_standin import OWNER_ID as OWNER
from tests.bot.helpers import FAST, pending, publish, run_events, run_until, settled
from trainer_bot import notifier as notifier_module
from trainer_bot.notifier import Notifier, NotifierConfig
from trainer_bot.outbox import OutgoingMessage
from trainer_bot.rate_limit import TokenBucket
from trainer_bot.senders import (
    ConsoleSender,
    DeliveryFailed,
    DeliveryRateLimited,
    DiscordUnreachable,
)
from trainer_bot.watch_store import WATCHING_KEY, WatchStore

pytestmark = pytest.mark.integration


class RecordingSender:
    """Keeps what it was asked to send; `fail_with` raises instead, for the first calls."""

    def __init__(self, fail_with: list[Exception] | None = None) -> None:
        self.messages: list[OutgoingMessage] = []
        self.fail_with = list(fail_with or [])

    async def send(self, recipient: int, message: OutgoingMessage) -> None:
        assert recipient == OWNER
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.messages.append(message)

    def titles(self) -> list[str]:
        return [embed.title or "" for m in self.messages for embed in m.embeds]


class DiscordLikeSender(RecordingSender):
    """Refuses with a 429 as Discord does when the channel's own bucket is empty."""

    def __init__(self, bucket: TokenBucket) -> None:
        super().__init__()
        self.bucket = bucket
        self.refused = 0

    async def send(self, recipient: int, message: OutgoingMessage) -> None:
        if not self.bucket.try_take():
            self.refused += 1
            raise DeliveryRateLimited(self.bucket.wait_s())
        await super().send(recipient, message)


async def notifier_for(
    redis_url: str, sender: RecordingSender | ConsoleSender, config: NotifierConfig = FAST
) -> tuple[Notifier, redis.asyncio.Redis]:
    client = await connect_async(redis_url)
    bus = AsyncEventBus(client)
    return Notifier(bus, WatchStore(client), sender, OWNER, config), client


def test_events_of_a_watched_run_reach_the_dm_in_console_mode(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")  # a watch saved by an earlier start
    progress = [factories.metrics_progress(step=s, loss=3.0 - s / 100) for s in range(0, 50, 10)]
    publish(redis_client, factories.queued("run-2"), factories.started("run-2"))
    publish(redis_client, factories.queued(), factories.started(), *progress)
    publish(redis_client, factories.completed())

    def dms() -> list[dict[str, list[dict[str, object]]]]:
        return [
            json.loads(r.getMessage().removeprefix("DM "))
            for r in caplog.records
            if getattr(r, "event", None) == "bot.dm"
        ]

    async def scenario() -> None:
        notifier, client = await notifier_for(redis_url, ConsoleSender())
        await run_until(notifier, lambda: settled(redis_client))
        await client.aclose()

    caplog.set_level(logging.INFO)
    asyncio.run(scenario())
    embeds = [embed for dm in dms() for embed in dm["embeds"]]
    # run-2 is not watched; the progress of run-1 was folded into its completion
    assert [e["title"] for e in embeds] == [
        "Queued · run-1",
        "Started · run-1",
        "Completed · run-1",
    ]
    [charts] = [dm["attachments"] for dm in dms() if dm["attachments"]]
    assert [chart["filename"] for chart in charts] == ["loss-run-1.png"]
    assert embeds[2]["image"] == {"url": "attachment://loss-run-1.png"}
    record = next(r for r in caplog.records if getattr(r, "event", None) == "bot.dm")
    assert getattr(record, "user_id", None) == OWNER
    assert pending(redis_client) == 0


def test_a_restart_delivers_what_was_not_sent(redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    publish(redis_client, factories.queued(), factories.started())
    refused = RecordingSender(fail_with=[DeliveryRateLimited(3600.0)])
    after_restart = RecordingSender()

    async def scenario() -> None:
        first, client = await notifier_for(redis_url, refused)
        await run_until(first, lambda: first.rate_limited == 1)
        assert pending(redis_client) == 2  # read, not sent: not acknowledged
        second = Notifier(first.bus, WatchStore(client), after_restart, OWNER, FAST)
        await run_until(second, lambda: settled(redis_client))
        await client.aclose()

    asyncio.run(scenario())
    assert refused.messages == []
    assert after_restart.titles() == ["Queued · run-1", "Started · run-1"]


def test_a_burst_of_500_events_yields_few_messages_and_no_unhandled_429(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-a", "run-b")
    burst = run_events("run-a", 121) + run_events("run-b", 121)
    burst += [factories.queued("run-other")] * (500 - len(burst))
    assert len(burst) == 500
    publish(redis_client, *burst)
    # Discord's side: 1 message at once, then 5 a second; the bot allows itself more, so
    # Discord refuses some and the bot must wait each 429 out
    discord_side = DiscordLikeSender(TokenBucket(1, 5.0))
    config = NotifierConfig(
        block_ms=20, summary_every_s=0.05, bucket_capacity=5, bucket_refill_per_s=50.0
    )

    async def scenario() -> Notifier:
        notifier, client = await notifier_for(redis_url, discord_side, config)
        await run_until(notifier, lambda: settled(redis_client))
        await client.aclose()
        return notifier

    notifier = asyncio.run(scenario())
    notices = [t for t in discord_side.titles() if not t.startswith("Progress")]
    expected = {
        f"{kind} · {run}"
        for kind in ("Queued", "Started", "Configured", "Checkpoint saved", "Completed")
        for run in ("run-a", "run-b")
    }
    assert expected <= set(notices)
    assert len(notices) == 14  # 7 per run (2 evaluations), none dropped, none twice
    assert len(discord_side.messages) <= 20  # 500 events, a handful of messages
    for message in discord_side.messages:
        assert len(message.embeds) <= 10
        assert sum(len(embed) for embed in message.embeds) <= 6000
    assert discord_side.refused >= 1
    assert notifier.rate_limited == discord_side.refused  # every 429 waited out
    assert notifier.dropped == 0
    assert notifier.sent == len(discord_side.messages)


def test_progress_is_summarised_periodically(redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    publish(redis_client, *(factories.metrics_progress(step=s) for s in range(20)))
    sender = RecordingSender()
    config = NotifierConfig(block_ms=20, summary_every_s=0.05)

    async def scenario() -> None:
        notifier, client = await notifier_for(redis_url, sender, config)
        await run_until(notifier, lambda: settled(redis_client))
        await client.aclose()

    asyncio.run(scenario())
    [message] = sender.messages  # 20 progress events, one summary
    assert [e.title for e in message.embeds] == ["Progress · run-1"]
    assert {f.name: f.value for f in message.embeds[0].fields}["Step"] == "19"


async def handle_all(redis_url: str, config: NotifierConfig) -> Notifier:
    """A notifier that has read and handled every entry, without its delivery loop."""
    notifier, client = await notifier_for(redis_url, RecordingSender(), config)
    await notifier.watches.restore()
    await notifier.bus.ensure_group(config.group, start_id="0")
    for delivery in await notifier.bus.consume(config.group, config.consumer):
        await notifier.handle(delivery)
    await client.aclose()
    return notifier


def test_a_completion_without_a_loss_history_has_no_chart(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    publish(redis_client, factories.metrics_progress(), factories.completed())
    notifier = asyncio.run(handle_all(redis_url, FAST))
    message = notifier.outbox.next_message()
    assert message is not None
    assert message.attachments == []
    assert message.embeds[0].image.url is None
    assert notifier.outbox.progress_runs() == []  # the completion took the held progress
    assert len(message.ack_ids) == 2  # the progress is acknowledged with the completion
    assert pending(redis_client) == 2


def test_overflow_drops_old_notices_keeps_terminal_ones_and_acks_the_dropped(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    publish(
        redis_client,
        factories.queued(),
        factories.started(),
        factories.configured(),
        factories.evaluated(),
        factories.checkpoint(),
        factories.failed(),
    )

    notifier = asyncio.run(handle_all(redis_url, NotifierConfig(max_notices=3)))
    message = notifier.outbox.next_message()
    assert message is not None
    assert [e.title for e in message.embeds] == [
        "Evaluated · run-1",
        "Checkpoint saved · run-1",
        "Failed · run-1",
    ]
    assert notifier.dropped == 3
    assert pending(redis_client) == 3  # the dropped ones were acknowledged


@pytest.mark.parametrize(
    ("failures", "delivered"),
    [
        ([DeliveryFailed("HTTP 403")] * 2, True),
        ([DeliveryFailed("HTTP 403")] * 3, False),  # refused 3 times: dropped
        ([DiscordUnreachable("HTTP 503")] * 5, True),  # an outage never drops anything
    ],
    ids=["refused-twice", "refused-thrice", "outage"],
)
def test_a_refused_message_is_tried_again_then_dropped(
    redis_url: str, redis_client: redis.Redis, failures: list[Exception], delivered: bool
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    publish(redis_client, factories.queued())
    sender = RecordingSender(fail_with=failures)

    async def scenario() -> Notifier:
        notifier, client = await notifier_for(redis_url, sender)
        await run_until(notifier, lambda: settled(redis_client))
        await client.aclose()
        return notifier

    notifier = asyncio.run(scenario())
    assert bool(sender.messages) is delivered
    assert (notifier.sent, notifier.dropped) == ((1, 0) if delivered else (0, 1))


def test_an_event_that_cannot_be_handled_stays_pending(
    redis_url: str,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_chart(title: str, points: object) -> bytes:
        raise RuntimeError("no chart today")

    monkeypatch.setattr(notifier_module, "loss_chart_png", broken_chart)
    redis_client.sadd(WATCHING_KEY, "run-1")
    publish(redis_client, factories.completed(), factories.queued("run-2"))

    def failed() -> bool:
        return any(getattr(r, "event", None) == "bot.handle_failed" for r in caplog.records)

    async def scenario() -> None:
        notifier, client = await notifier_for(redis_url, RecordingSender())
        await run_until(notifier, lambda: failed() and pending(redis_client) == 1)
        await client.aclose()

    asyncio.run(scenario())
    assert pending(redis_client) == 1  # the completion, for the next start; run-2's was acked


def test_watch_store_round_trip(redis_url: str, redis_client: redis.Redis) -> None:
    async def scenario() -> None:
        client = await connect_async(redis_url)
        store = WatchStore(client)
        assert await store.watch("run-1")
        assert not await store.watch("run-1")
        assert store.is_watched("run-1")
        assert await store.unwatch("run-1")
        assert not await store.unwatch("run-1")
        await store.watch("run-2")
        restored = WatchStore(client)
        assert not restored.is_watched("run-2")
        assert await restored.restore() == {"run-2"}
        assert restored.watching == frozenset({"run-2"})
        await client.aclose()

    asyncio.run(scenario())
