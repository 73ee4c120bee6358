"""The notifier against a real Redis: notices for what needs attention, one live message per
run edited in place, everything acknowledged only once sent, pacing and back-off that hold."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio

from platform_core.event_bus import AsyncEventBus
from platform_core.events import MetricsEval
from platform_core.redis_connection import connect_async
from tests.bot import factories
from tests.bot.discord_standin import OWNER_ID as OWNER
from tests.bot.helpers import FAST, max_in_window, pending, publish, run_events, run_until, settled
from tests.redis_server import StoppableRedis
from trainer_bot import notifier as notifier_module
from trainer_bot.live_store import LIVE_KEY
from trainer_bot.notifier import Notifier, NotifierConfig
from trainer_bot.outbox import OutgoingMessage
from trainer_bot.rate_limit import SlidingWindow
from trainer_bot.senders import (
    ConsoleSender,
    DeliveryFailed,
    DeliveryRateLimited,
    DiscordUnreachable,
)
from trainer_bot.watch_store import WATCHING_KEY, WatchStore

pytestmark = pytest.mark.integration
PNG = b"\x89PNG\r\n\x1a\n-chart"
LIVE_TITLE = " · running"  # a live message's title: "<run> · <status>"


class RecordingSender:
    """Keeps what it was asked to send or edit; `fail_with` raises instead, for the first
    calls."""

    def __init__(self, fail_with: list[Exception] | None = None) -> None:
        self.messages: list[OutgoingMessage] = []
        self.edits: list[tuple[int, OutgoingMessage]] = []
        self.times: list[float] = []  # when each send or edit went through
        self.calls = 0
        self.fail_with = list(fail_with or [])
        self._ids = itertools.count(500)

    def _attempt(self, recipient: int) -> None:
        assert recipient == OWNER
        self.calls += 1
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.times.append(time.monotonic())

    async def send(self, recipient: int, message: OutgoingMessage) -> int:
        self._attempt(recipient)
        self.messages.append(message)
        return next(self._ids)

    async def edit(self, recipient: int, message_id: int, message: OutgoingMessage) -> None:
        self._attempt(recipient)
        self.edits.append((message_id, message))

    def titles(self) -> list[str]:
        return [embed.title or "" for m in self.messages for embed in m.embeds]

    def notices(self) -> list[str]:
        """Titles of sent embeds that are not live status messages."""
        return [t for t in self.titles() if " · " in t and not t.startswith("run-")]


class DiscordLikeSender(RecordingSender):
    """Refuses with a 429 as Discord does when the channel's own window is full."""

    def __init__(self, window: SlidingWindow) -> None:
        super().__init__()
        self.window = window
        self.refused = 0

    def _attempt(self, recipient: int) -> None:
        if self.window.wait_s() > 0:
            self.refused += 1
            raise DeliveryRateLimited(self.window.wait_s())
        self.window.take()
        super()._attempt(recipient)


async def chart(run_id: str) -> bytes:
    return PNG


async def notifier_for(
    redis_url: str,
    sender: RecordingSender | ConsoleSender,
    config: NotifierConfig = FAST,
    *,
    with_chart: bool = True,
) -> tuple[Notifier, redis.asyncio.Redis]:
    client = await connect_async(redis_url)
    bus = AsyncEventBus(client)
    charts = chart if with_chart else None
    return Notifier(bus, WatchStore(client), sender, OWNER, config, charts=charts), client


def field_values(message: OutgoingMessage) -> dict[str | None, str | None]:
    [embed] = message.embeds
    return {f.name: f.value for f in embed.fields}


def test_notices_and_live_status_reach_the_console_as_readable_lines(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")  # a watch saved by an earlier start
    publish(redis_client, factories.queued("run-2"), factories.started("run-2"))
    publish(redis_client, factories.queued(), factories.started())

    def lines(event: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if getattr(r, "event", None) == event]

    async def scenario() -> None:
        notifier, client = await notifier_for(redis_url, ConsoleSender())
        task = asyncio.create_task(notifier.run())
        async with asyncio.timeout(10):
            while len(lines("bot.dm")) < 2:
                await asyncio.sleep(0.01)
            publish(redis_client, factories.configured(), factories.metrics_progress(step=10))
            while not lines("bot.live"):
                await asyncio.sleep(0.01)
            publish(redis_client, factories.completed())
            while not settled(redis_client) or notifier.live:  # + the final edit
                await asyncio.sleep(0.01)
        notifier.stop()
        await task
        await client.aclose()

    caplog.set_level(logging.INFO)
    asyncio.run(scenario())
    notices = lines("bot.dm")
    # run-2 is not watched; each notice is one line of plain words, not JSON
    assert notices[0].startswith("Queued · run-1 · ")
    assert notices[1].startswith("Started · run-1 · Worker: w1")
    assert notices[2].startswith("Completed · run-1 · ok · Duration: 1h 02m")
    assert notices[3] == "chart chart-run-1.png (14 bytes, not saved)"
    assert all("{" not in line for line in notices)
    assert lines("bot.live")[0].startswith("run-1 · running · ")
    assert lines("bot.live")[-1].startswith("run-1 · completed · ████")
    assert "Step: 10 / 200" in lines("bot.live")[-1]  # 200: the worker's max_steps
    record = next(r for r in caplog.records if getattr(r, "event", None) == "bot.dm")
    assert getattr(record, "user_id", None) == OWNER


def test_a_run_submitted_for_the_owner_is_watched_from_its_queued_event(
    redis_url: str, redis_client: redis.Redis
) -> None:
    for_owner = factories.queued("run-cli").model_copy(update={"user_id": OWNER})
    for_someone = factories.queued("run-other").model_copy(update={"user_id": 1})
    publish(redis_client, for_owner, for_someone, factories.started("run-cli"))
    sender = RecordingSender()

    async def scenario() -> None:
        notifier, client = await notifier_for(redis_url, sender)
        await run_until(notifier, lambda: settled(redis_client))
        await client.aclose()

    asyncio.run(scenario())
    assert sender.notices() == ["Queued · run-cli", "Started · run-cli"]
    assert redis_client.smembers(WATCHING_KEY) == {b"run-cli"}


def test_one_live_message_per_run_is_edited_in_place(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    sender = RecordingSender()
    publish(redis_client, factories.queued(), factories.started(), factories.configured())

    async def scenario() -> None:
        notifier, client = await notifier_for(redis_url, sender)
        task = asyncio.create_task(notifier.run())
        async with asyncio.timeout(10):
            while len(sender.messages) < 2 or not notifier.live["run-1"].message_id:
                await asyncio.sleep(0.01)
            publish(redis_client, factories.metrics_progress(step=40, loss=2.25))
            publish(redis_client, factories.evaluated(step=40), factories.checkpoint())
            while not sender.edits:
                await asyncio.sleep(0.01)
            publish(redis_client, factories.completed())
            while not settled(redis_client) or notifier.live:  # + the final edit
                await asyncio.sleep(0.01)
        notifier.stop()
        await task
        await client.aclose()

    asyncio.run(scenario())
    live_ids = {message_id for message_id, _ in sender.edits}
    assert len(live_ids) == 1  # every update edited the same message
    assert sender.notices() == ["Queued · run-1", "Started · run-1", "Completed · run-1"]
    assert "Evaluated · run-1" not in sender.titles()  # evals and checkpoints edit instead
    figures = field_values(sender.edits[-2][1]) if len(sender.edits) > 1 else {}
    last = field_values(sender.edits[-1][1])
    assert last["Eval loss"] == "2"
    assert last["Last checkpoint"] == "step 50"
    assert last["Ended"] is not None and "UTC" in last["Ended"]  # the final edit: its end
    assert sender.edits[-1][1].embeds[0].title == "run-1 · completed"
    assert figures.get("ETA", "—") is not None
    [with_chart] = [m for m in sender.messages if m.attachments]
    assert [a.filename for a in with_chart.attachments] == ["chart-run-1.png"]
    assert with_chart.embeds[-1].image.url == "attachment://chart-run-1.png"
    assert redis_client.hlen(LIVE_KEY) == 0  # the finished run's live entry is gone


def test_live_edits_come_at_most_every_live_every_s(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    sender = RecordingSender()
    config = dataclasses.replace(FAST, live_every_s=0.25)

    async def scenario() -> float:
        notifier, client = await notifier_for(redis_url, sender, config)
        task = asyncio.create_task(notifier.run())
        start = time.monotonic()
        for step in range(100):  # a progress event every 10 ms for a second
            publish(redis_client, factories.metrics_progress(step=step))
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - start
        async with asyncio.timeout(10):
            while not settled(redis_client):
                await asyncio.sleep(0.01)
        notifier.stop()
        await task
        await client.aclose()
        return elapsed

    elapsed = asyncio.run(scenario())
    updates = len(sender.messages) + len(sender.edits)
    assert len(sender.messages) == 1  # the live message, then only edits
    assert updates <= elapsed / 0.25 + 2
    assert field_values((sender.edits or [(0, sender.messages[0])])[-1][1])["Step"] == "99"


def test_a_restart_edits_the_same_live_message(redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    publish(redis_client, factories.configured(), factories.metrics_progress(step=10))
    first_life, second_life = RecordingSender(), RecordingSender()

    async def scenario() -> None:
        first, client = await notifier_for(redis_url, first_life)
        await run_until(first, lambda: settled(redis_client))
        publish(redis_client, factories.metrics_progress(step=20))
        second, _ = await notifier_for(redis_url, second_life)
        await run_until(second, lambda: settled(redis_client))
        await client.aclose()

    asyncio.run(scenario())
    [live] = first_life.messages
    [(edited, message)] = second_life.edits
    assert second_life.messages == []
    assert edited == 500  # the first life's message id, from Redis
    assert field_values(message)["Step"] == "20 / 200"  # total steps remembered too
    assert field_values(live)["Step"] == "10 / 200"


def test_a_restart_delivers_what_was_not_sent(redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    publish(redis_client, factories.queued(), factories.started())
    refused = RecordingSender(fail_with=[DeliveryRateLimited(3600.0)])
    after_restart = RecordingSender()

    async def scenario() -> None:
        first, client = await notifier_for(redis_url, refused)
        await run_until(first, lambda: first.rate_limited == 1)
        assert pending(redis_client) == 2  # read, not sent: not acknowledged
        # the 429's wait is saved: a new pacer (window of 5 per 0.05 s) would not wait an hour
        second, _ = await notifier_for(redis_url, after_restart)
        second_task = asyncio.create_task(second.run())
        await asyncio.sleep(0.3)
        assert after_restart.messages == []
        second.stop()
        await second_task
        redis_client.delete("bot:pacing:4242")  # the hour is over
        third, _ = await notifier_for(redis_url, after_restart)
        await run_until(third, lambda: settled(redis_client))
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
    # Discord's side: 1 message per 0.2 s; the bot allows itself 5 per 0.05 s, so Discord
    # refuses some and the bot must wait each 429 out
    discord_side = DiscordLikeSender(SlidingWindow(1, 0.2))

    async def scenario() -> Notifier:
        notifier, client = await notifier_for(redis_url, discord_side)
        await run_until(notifier, lambda: settled(redis_client))
        await client.aclose()
        return notifier

    notifier = asyncio.run(scenario())
    notices = discord_side.notices()
    expected = [f"{kind} · {run}" for run in ("run-a", "run-b") for kind in ("Queued", "Started")]
    assert set(notices) == {*expected, "Completed · run-a", "Completed · run-b"}
    assert len(notices) == 6  # none dropped, none twice
    assert len(discord_side.messages) + len(discord_side.edits) <= 10
    for message in discord_side.messages:
        assert len(message.embeds) <= 10
        assert sum(len(embed) for embed in message.embeds) <= 6000
    assert notifier.rate_limited == discord_side.refused  # every 429 waited out
    assert notifier.dropped == 0
    assert notifier.sent == len(discord_side.messages) + len(discord_side.edits)


def test_sends_and_edits_never_exceed_the_window_across_a_429(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1", "run-2", "run-3")
    sender = RecordingSender(fail_with=[])
    config = dataclasses.replace(FAST, dm_window_s=0.5, live_every_s=0.0)

    async def scenario() -> None:
        notifier, client = await notifier_for(redis_url, sender, config)
        task = asyncio.create_task(notifier.run())
        for step in range(60):
            if step == 20:
                sender.fail_with.append(DeliveryRateLimited(0.2))
            for run in ("run-1", "run-2", "run-3"):
                publish(redis_client, factories.metrics_progress(run, step=step))
            await asyncio.sleep(0.02)
        async with asyncio.timeout(10):
            while not settled(redis_client):
                await asyncio.sleep(0.01)
        notifier.stop()
        await task
        await client.aclose()

    asyncio.run(scenario())
    assert len(sender.times) >= 10
    assert max_in_window(sender.times, 0.5) <= 5


def test_an_outage_is_retried_on_the_back_off_whatever_arrives_meanwhile(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1", "run-2")
    outage: list[Exception] = [DiscordUnreachable("cannot reach Discord")] * 1000
    sender = RecordingSender(fail_with=outage)
    config = dataclasses.replace(FAST, backoff_s=0.1, backoff_max_s=0.4, backoff_jitter=0.0)

    async def scenario() -> float:
        notifier, client = await notifier_for(redis_url, sender, config)
        task = asyncio.create_task(notifier.run())
        start = time.monotonic()
        for i in range(100):  # a new notice every 10 ms during the outage
            publish(redis_client, factories.queued(f"run-{1 + i % 2}"))
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - start
        attempts = sender.calls
        sender.fail_with.clear()  # Discord is back
        async with asyncio.timeout(10):
            while not settled(redis_client):
                await asyncio.sleep(0.01)
        notifier.stop()
        await task
        await client.aclose()
        assert attempts <= 2 + elapsed / 0.4 + 2  # 0.1, 0.2, then every 0.4 s
        return elapsed

    asyncio.run(scenario())
    # the backlog went out as digests: 100 notices in messages of up to 10 embeds
    assert len(sender.titles()) == 100
    assert len(sender.messages) <= 12


def test_a_new_best_eval_gets_a_message_when_asked_for(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    better = factories.like(MetricsEval, "run-1", step=60, eval_loss=1.5, perplexity=4.5)
    publish(redis_client, factories.evaluated(step=30), better, factories.evaluated(step=90))
    sender = RecordingSender()
    config = dataclasses.replace(FAST, notify_best_eval=True)

    async def scenario() -> None:
        notifier, client = await notifier_for(redis_url, sender, config)
        await run_until(notifier, lambda: settled(redis_client))
        await client.aclose()

    asyncio.run(scenario())
    assert sender.notices() == ["Evaluated · run-1", "Evaluated · run-1"]  # 2.0, then 1.5


async def handle_all(redis_url: str, config: NotifierConfig, *, with_chart: bool) -> Notifier:
    """A notifier that has read and handled every entry, without its delivery loop."""
    notifier, client = await notifier_for(
        redis_url, RecordingSender(), config, with_chart=with_chart
    )
    await notifier.watches.restore()
    await notifier.bus.ensure_group(config.group, start_id="0")
    for delivery in await notifier.bus.consume(config.group, config.consumer):
        await notifier.handle(delivery)
    await client.aclose()
    return notifier


def test_a_completion_without_a_chart_and_without_a_live_message(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    publish(redis_client, factories.metrics_progress(), factories.completed())
    notifier = asyncio.run(handle_all(redis_url, FAST, with_chart=False))
    message = notifier.outbox.next_message()
    assert message is not None
    assert message.attachments == []
    assert message.embeds[0].image.url is None
    assert notifier.live == {}  # never sent: the progress rides the completion
    assert len(message.ack_ids) == 2
    assert pending(redis_client) == 2


def test_overflow_drops_old_notices_keeps_terminal_ones_and_acks_the_dropped(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1", "run-2")
    publish(
        redis_client,
        factories.queued(),
        factories.started(),
        factories.queued("run-2"),
        factories.started("run-2"),
        factories.failed(),
    )

    notifier = asyncio.run(handle_all(redis_url, NotifierConfig(max_notices=3), with_chart=True))
    message = notifier.outbox.next_message()
    assert message is not None
    assert [e.title for e in message.embeds] == [
        "Queued · run-2",
        "Started · run-2",
        "Failed · run-1",
    ]
    assert notifier.dropped == 2
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
    def broken_embed(*args: object) -> object:
        raise RuntimeError("no embed today")

    monkeypatch.setattr(notifier_module, "event_embed", broken_embed)
    redis_client.sadd(WATCHING_KEY, "run-1")
    publish(redis_client, factories.completed(), factories.metrics_progress("run-2"))

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


def test_the_bot_waits_through_a_redis_restart_and_delivers_what_came_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notifier_module, "REDIS_RETRY_FIRST_S", 0.05)
    monkeypatch.setattr(notifier_module, "REDIS_RETRY_MAX_S", 0.2)
    folder = tmp_path / "redis"
    folder.mkdir()
    sender = RecordingSender()

    async def scenario(server: StoppableRedis) -> None:
        sync = redis.Redis.from_url(server.url)
        sync.sadd(WATCHING_KEY, "run-1")
        publish(sync, factories.queued())
        notifier, client = await notifier_for(server.url, sender)
        task = asyncio.create_task(notifier.run())
        async with asyncio.timeout(20):
            while "Queued · run-1" not in " ".join(sender.notices()):
                await asyncio.sleep(0.01)
            server.stop()
            await asyncio.sleep(1.0)  # both loops meet the outage
            assert not task.done()  # paused, not ended
            server.start()
            publish(sync, factories.started())
            while not any(t.startswith("Started") for t in sender.notices()):
                assert not task.done()
                await asyncio.sleep(0.01)
        notifier.stop()
        await task
        await client.aclose()
        sync.close()

    with StoppableRedis(folder) as server:
        asyncio.run(scenario(server))
    assert [t.split(" · ")[0] for t in sender.notices()] == ["Queued", "Started"]
