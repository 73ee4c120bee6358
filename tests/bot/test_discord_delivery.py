"""DMs through discord.py's real HTTP client, against the local stand-in of Discord's REST
API: login, opening the DM, posting embeds and charts, and 429s (Discord's and Cloudflare's)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time

import discord
import pytest
import redis

from platform_core.event_bus import AsyncEventBus
from platform_core.events import Event
from platform_core.redis_connection import connect_async
from tests.bot import factories
from tests.bot.discord_standin import OWNER_ID, DiscordStandIn, Scripted, rate_limited
from tests.bot.helpers import (
    FAST,
    TOKEN,
    WAIT_S,
    discord_client,
    max_in_window,
    publish,
    run_events,
    run_until,
    settled,
)
from trainer_bot.notifier import Notifier, NotifierConfig
from trainer_bot.outbox import OutgoingMessage
from trainer_bot.senders import (
    DeliveryFailed,
    DeliveryRateLimited,
    DiscordSender,
    DiscordUnreachable,
)
from trainer_bot.watch_store import WATCHING_KEY, WatchStore

pytestmark = pytest.mark.integration
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def deliver_all(
    redis_url: str,
    redis_client: redis.Redis,
    standin: DiscordStandIn,
    monkeypatch: pytest.MonkeyPatch,
    config: NotifierConfig = FAST,
) -> Notifier:
    """Run a notifier sending through discord.py until every entry is acknowledged."""
    async with discord_client(standin, monkeypatch) as client:
        redis_async = await connect_async(redis_url)
        bus = AsyncEventBus(redis_async)
        sender = DiscordSender(client)
        notifier = Notifier(bus, WatchStore(redis_async), sender, OWNER_ID, config, charts=chart)
        await run_until(notifier, lambda: settled(redis_client))
        await redis_async.aclose()
    return notifier


async def chart(run_id: str) -> bytes:
    return PNG_MAGIC + b"chart"


def titles(standin: DiscordStandIn) -> list[str]:
    return [str(embed["title"]) for message in standin.messages for embed in message.embeds]


def test_events_become_dms_through_discord_py(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    progress = [factories.metrics_progress(step=s, loss=3.0 - s / 100) for s in range(0, 50, 10)]
    publish(redis_client, factories.queued(), factories.started(), *progress)
    publish(redis_client, factories.completed())
    standin = DiscordStandIn()

    notifier = asyncio.run(deliver_all(redis_url, redis_client, standin, monkeypatch))

    # discord.py logged in as a bot would, then opened the owner's DM once
    assert standin.posted("/users/@me", "GET")
    assert standin.posted("/oauth2/applications/@me", "GET")
    [opened] = standin.posted("/users/@me/channels")
    assert opened.body == {"recipient_id": OWNER_ID}
    assert all(r.headers["Authorization"] == f"Bot {TOKEN}" for r in standin.requests)
    notices = [t for t in titles(standin) if not t.startswith("run-1 · ")]
    assert notices == ["Queued · run-1", "Started · run-1", "Completed · run-1"]
    [with_chart] = [m for m in standin.messages if m.files]
    assert list(with_chart.files) == ["chart-run-1.png"]
    assert with_chart.files["chart-run-1.png"].startswith(PNG_MAGIC)
    assert notifier.sent == len(standin.channel_writes)


def test_a_burst_through_discord_py_honours_every_429(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-a", "run-b")
    burst = run_events("run-a", 121) + run_events("run-b", 121)
    burst += [factories.queued("run-other")] * (500 - len(burst))
    publish(redis_client, *burst)
    # Discord allows 2 messages per 0.2 s here and refuses the first two tries outright
    standin = DiscordStandIn(limit=2, window_s=0.2)
    standin.script(rate_limited(0.05), rate_limited(0.05))

    notifier = asyncio.run(deliver_all(redis_url, redis_client, standin, monkeypatch))

    notices = [t for t in titles(standin) if not t.startswith("run-")]
    assert len(notices) == 6  # queued, started and completed of each run, once
    assert {"Completed · run-a", "Completed · run-b"} <= set(notices)
    assert standin.served_429 >= 2
    assert len(standin.channel_writes) <= 12  # 500 events, a handful of messages and edits
    for message in standin.messages:
        assert len(message.embeds) <= 10
    assert notifier.sent == len(standin.channel_writes)
    assert notifier.dropped == 0


def test_the_live_message_is_edited_through_discord_py_and_paced_across_a_restart(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1", "run-2", "run-3")
    # Discord's real ratio (5 per 5 s) scaled to 5 per 0.5 s, on both sides
    standin = DiscordStandIn(limit=5, window_s=0.5)
    config = dataclasses.replace(FAST, dm_window_s=0.5, live_every_s=0.0)

    async def life(client: discord.Client, steps: range, *, throttled_at: int) -> None:
        redis_async = await connect_async(redis_url)
        notifier = Notifier(
            AsyncEventBus(redis_async),
            WatchStore(redis_async),
            DiscordSender(client),
            OWNER_ID,
            config,
        )
        task = asyncio.create_task(notifier.run())
        for step in steps:
            if step == throttled_at:
                standin.script(rate_limited(0.1))
            for run in ("run-1", "run-2", "run-3"):
                publish(redis_client, factories.metrics_progress(run, step=step))
            await asyncio.sleep(0.02)
        notifier.stop()  # a restart in the middle of it all
        await task
        await redis_async.aclose()

    async def scenario() -> None:
        async with discord_client(standin, monkeypatch) as client:
            await life(client, range(0, 40), throttled_at=20)
            await life(client, range(40, 80), throttled_at=60)

    asyncio.run(scenario())
    writes = standin.channel_writes
    assert standin.served_429 >= 2
    assert len(standin.edits) >= 10
    assert max_in_window([w.at for w in writes], 0.5) <= 5
    # one live message per run, edited in place, the second life included
    assert len(standin.messages) == 3
    edited = {w.path.rsplit("/", 1)[1] for w in standin.edits}
    assert len(edited) == 3


def test_a_cloudflare_429_is_waited_out_by_the_notifier(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    publish(redis_client, factories.queued())
    standin = DiscordStandIn()
    standin.script(rate_limited(0.05, via=False))  # discord.py does not retry these itself

    notifier = asyncio.run(deliver_all(redis_url, redis_client, standin, monkeypatch))

    assert notifier.rate_limited == 1
    assert titles(standin) == ["Queued · run-1"]


def message() -> OutgoingMessage:
    return OutgoingMessage([discord.Embed(title="hello")])


@pytest.mark.parametrize(
    ("answer", "raised", "detail"),
    [
        (rate_limited(45.0), DeliveryRateLimited, "45.00s"),  # beyond max_ratelimit_timeout
        (rate_limited(7.0, via=False), DeliveryRateLimited, "7.00s"),
        (Scripted(429, "banned"), DeliveryRateLimited, "60.00s"),  # no Retry-After at all
        (Scripted(403, {"code": 50007, "message": "Cannot send"}), DeliveryFailed, "403"),
        (Scripted(503, {"code": 0, "message": "upstream down"}), DiscordUnreachable, "503"),
    ],
)
def test_discord_sender_turns_refusals_into_typed_errors(
    monkeypatch: pytest.MonkeyPatch, answer: Scripted, raised: type[Exception], detail: str
) -> None:
    standin = DiscordStandIn()
    standin.script(answer)

    async def scenario() -> None:
        client = discord.Client(intents=discord.Intents.none(), max_ratelimit_timeout=30.0)
        async with discord_client(standin, monkeypatch, client):
            with pytest.raises(raised, match=detail):
                await DiscordSender(client).send(OWNER_ID, message())

    asyncio.run(scenario())
    assert standin.messages == []


def test_discord_sender_reports_an_unreachable_discord(monkeypatch: pytest.MonkeyPatch) -> None:
    standin = DiscordStandIn()

    async def scenario() -> None:
        async with discord_client(standin, monkeypatch) as client:
            await standin.stop()  # Discord goes away after login
            with pytest.raises(DiscordUnreachable, match="cannot reach Discord"):
                await DiscordSender(client).send(OWNER_ID, message())

    asyncio.run(scenario())


def test_three_parallel_runs_one_queued_each_and_few_messages_per_run(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's proof, in time scaled by 1/100 (10 s of live interval is 0.1 s, Discord's
    5 per 5 s is 5 per 0.05 s): one "queued" notice per run, and no more than
    ⌈duration / 10 s⌉ + 6 messages (sends and edits) per run."""
    scale = 0.01
    runs = ("run-a", "run-b", "run-c")
    redis_client.sadd(WATCHING_KEY, *runs)
    standin = DiscordStandIn(limit=5, window_s=5 * scale)
    config = dataclasses.replace(FAST, dm_window_s=5 * scale, live_every_s=10 * scale)

    async def scenario() -> float:
        async with discord_client(standin, monkeypatch) as client:
            redis_async = await connect_async(redis_url)
            notifier = Notifier(
                AsyncEventBus(redis_async),
                WatchStore(redis_async),
                DiscordSender(client),
                OWNER_ID,
                config,
                charts=chart,
            )
            task = asyncio.create_task(notifier.run())
            started = time.monotonic()
            for run in runs:
                publish(redis_client, factories.queued(run), factories.started(run))
                publish(redis_client, factories.configured(run))
            for second in range(150):  # a 150-second run, a progress report a second
                for run in runs:
                    events: list[Event] = [factories.metrics_progress(run, step=second)]
                    if second % 30 == 29:
                        events += [factories.evaluated(run, step=second), factories.checkpoint(run)]
                    publish(redis_client, *events)
                await asyncio.sleep(max(0.0, started + (second + 1) * scale - time.monotonic()))
            publish(redis_client, *(factories.completed(run) for run in runs))
            duration_s = (time.monotonic() - started) / scale
            async with asyncio.timeout(WAIT_S):
                while not settled(redis_client):
                    await asyncio.sleep(0.01)
            notifier.stop()
            await task
            await redis_async.aclose()
        return duration_s

    duration_s = asyncio.run(scenario())
    writes = standin.channel_writes
    for run in runs:
        mine = [w for w in writes if any(run in str(e.get("title")) for e in w.embeds)]
        assert len(mine) <= math.ceil(duration_s / 10) + 6, (run, len(mine), duration_s)
        assert [t for t in titles(standin) if t == f"Queued · {run}"] == [f"Queued · {run}"]
        assert f"Completed · {run}" in titles(standin)
    assert max_in_window([w.at for w in writes], 5 * scale) <= 5


def test_a_discord_outage_is_retried_on_the_back_off_then_the_backlog_goes_as_digests(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_client.sadd(WATCHING_KEY, *(f"run-{i}" for i in range(30)))
    standin = DiscordStandIn()
    config = dataclasses.replace(FAST, backoff_s=0.1, backoff_max_s=0.4, backoff_jitter=0.1)

    async def scenario() -> tuple[int, float]:
        async with discord_client(standin, monkeypatch) as client:
            redis_async = await connect_async(redis_url)
            notifier = Notifier(
                AsyncEventBus(redis_async),
                WatchStore(redis_async),
                DiscordSender(client),
                OWNER_ID,
                config,
            )
            await client.create_dm(discord.Object(id=OWNER_ID))  # the DM was open before
            await standin.stop()  # Discord goes away
            task = asyncio.create_task(notifier.run())
            started = time.monotonic()
            for i in range(30):  # new notices keep arriving during the outage
                publish(redis_client, factories.queued(f"run-{i}"))
                await asyncio.sleep(0.04)
            outage_s = time.monotonic() - started
            attempts = notifier.attempts
            await standin.start(standin.port)  # Discord is back
            async with asyncio.timeout(WAIT_S):
                while not settled(redis_client):
                    await asyncio.sleep(0.01)
            notifier.stop()
            await task
            await redis_async.aclose()
        return attempts, outage_s

    attempts, outage_s = asyncio.run(scenario())
    # 0.1, 0.2, then every 0.4 s (+10% jitter at most): not one try per new notice
    assert 2 <= attempts <= 3 + outage_s / 0.4
    notices = [t for t in titles(standin) if t.startswith("Queued")]
    assert sorted(notices) == sorted(f"Queued · run-{i}" for i in range(30))
    assert len(standin.messages) <= 4  # the backlog, 10 embeds a message
