"""The bot's notification path against the raw bus on the same Redis (issue 6's benchmark).

(a) latency: a worker-style publish of a watched run's event -> the notifier (consumer group,
    outbox, token bucket) -> discord.py's HTTP client -> the DM request arriving at a local
    stand-in of Discord's REST API, against raw XADD -> blocking XREAD of the same bytes on
    the same Redis, one event at a time, the two paths alternating which goes first. The
    bucket is wide open here: this measures the path, not the pacing.
(b) delivery: a burst of notices with the stand-in advertising a bucket of `--limit` messages
    per `--window-s` through X-RateLimit-* headers (and answering a few scripted 429s with
    `Via` and `retry_after`, as Discord does) and the notifier's bucket set to that rate:
    messages/s in the steady state (after the first `--limit`, which a full bucket sends at
    once) divided by the advertised rate, and the 429s left unhandled (entries dropped or
    never delivered).

Everything runs in one asyncio loop: publisher, raw reader, notifier, discord.py and the
stand-in (tests/bot/discord_standin.py).

Usage: python bench/bot_events.py [--events 300] [--burst 1000] [--limit 10] [--window-s 0.5]
Redis: REDIS_URL when set, else the project's embedded redis-server under a temp data root.
The last line printed is one JSON object with the figures issue 6 names.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import discord
import redis.asyncio
from aiohttp import web
from pydantic import TypeAdapter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the stand-in lives in tests/

from tests.bot import factories
from tests.bot.discord_standin import OWNER_ID, DiscordStandIn, rate_limited
from tests.bot.helpers import max_in_window

from platform_core.event_bus import AsyncEventBus
from platform_core.events import JobQueued, JobQueuedPayload, encode_event
from platform_core.redis_connection import connect_async, resolve_redis_url
from trainer_bot.live_store import LIVE_KEY
from trainer_bot.notifier import Notifier, NotifierConfig
from trainer_bot.rate_limit import DM_LIMIT, DM_WINDOW_S, PACING_KEY
from trainer_bot.senders import DiscordSender
from trainer_bot.watch_store import WATCHING_KEY, WatchStore

RAW_STREAM = "bench:bot:raw"
RUN_S = 300  # the simulated run: 5 minutes
PACING = f"{PACING_KEY}{OWNER_ID}"  # the pacer's saved window, cleared between parts
_EMBEDS: TypeAdapter[list[dict[str, object]]] = TypeAdapter(list[dict[str, object]])
TOKEN = "bench-token"


class TimedStandIn(DiscordStandIn):
    """The stand-in, noting when each embed's message arrived (by embed title)."""

    def __init__(self, *, limit: int, window_s: float) -> None:
        super().__init__(limit=limit, window_s=window_s)
        self.arrived: dict[str, int] = {}
        self.message_times: list[int] = []
        self.waiters: dict[str, asyncio.Future[int]] = {}

    def _post_message(
        self, channel_id: str, body: dict[str, object] | None, message_id: str | None = None
    ) -> web.Response:
        now = time.perf_counter_ns()
        answer = super()._post_message(channel_id, body, message_id)
        if answer.status == 200 and message_id is None:
            self.message_times.append(now)
            for embed in _EMBEDS.validate_python((body or {}).get("embeds", [])):
                title = str(embed["title"])
                self.arrived[title] = now
                waiter = self.waiters.pop(title, None)
                if waiter is not None:
                    waiter.set_result(now)
        return answer


def _event(run_id: str) -> JobQueued:
    payload = JobQueuedPayload(kind="train_model", queue="training", description="bench")
    return JobQueued(run_id=run_id, payload=payload)


def _percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def _raw_reader(client: redis.asyncio.Redis, waiters: dict[str, asyncio.Future[int]]) -> None:
    last: bytes | str = "$"
    while True:
        response = await client.xread({RAW_STREAM: last}, block=1_000, count=100)
        if not isinstance(response, list):
            continue
        for stream_entries in response:  # [stream name, [(id, {field: value}), ...]]
            for entry_id, fields in stream_entries[1]:
                last = entry_id
                waiter = waiters.pop(fields[b"i"].decode(), None)
                if waiter is not None:
                    waiter.set_result(time.perf_counter_ns())


class Bench:
    def __init__(self, url: str) -> None:
        self.url = url

    async def _bot(
        self, standin: TimedStandIn, config: NotifierConfig
    ) -> tuple[discord.Client, Notifier, asyncio.Task[None], redis.asyncio.Redis]:
        discord.http.Route.BASE = await standin.start()
        client = discord.Client(intents=discord.Intents.none())
        await client.login(TOKEN)
        consumer = await connect_async(self.url)
        notifier = Notifier(
            AsyncEventBus(consumer), WatchStore(consumer), DiscordSender(client), OWNER_ID, config
        )
        task = asyncio.create_task(notifier.run())
        return client, notifier, task, consumer

    async def latency(self, events: int, warmup: int) -> tuple[list[float], list[float]]:
        publisher = await connect_async(self.url)
        await publisher.delete("trainer:events", RAW_STREAM, WATCHING_KEY)
        run_ids = [f"lat-{i}" for i in range(warmup + events)]
        await publisher.sadd(WATCHING_KEY, *run_ids)
        standin = TimedStandIn(limit=1_000_000, window_s=1.0)
        wide_open = NotifierConfig(
            group="bench-latency", dm_limit=10**6, dm_window_s=1.0, global_limit=10**6
        )
        client, notifier, task, consumer = await self._bot(standin, wide_open)
        raw_client = await connect_async(self.url)
        raw_waiters: dict[str, asyncio.Future[int]] = {}
        reader = asyncio.create_task(_raw_reader(raw_client, raw_waiters))
        bus = AsyncEventBus(publisher)
        await asyncio.sleep(0.3)  # both readers are blocked in XREAD / XREADGROUP
        loop = asyncio.get_running_loop()
        raw_us: list[float] = []
        bot_us: list[float] = []

        async def time_raw(run_id: str) -> float:
            waiter: asyncio.Future[int] = loop.create_future()
            raw_waiters[run_id] = waiter
            start = time.perf_counter_ns()
            await publisher.xadd(RAW_STREAM, {"i": run_id, "data": encode_event(_event(run_id))})
            return (await asyncio.wait_for(waiter, 10) - start) / 1_000

        async def time_bot(run_id: str) -> float:
            waiter: asyncio.Future[int] = loop.create_future()
            standin.waiters[f"Queued · {run_id}"] = waiter
            start = time.perf_counter_ns()
            await bus.publish(_event(run_id))
            return (await asyncio.wait_for(waiter, 10) - start) / 1_000

        for i, run_id in enumerate(run_ids):
            if i % 2:
                bot, raw = await time_bot(run_id), await time_raw(run_id)
            else:
                raw, bot = await time_raw(run_id), await time_bot(run_id)
            if i >= warmup:
                raw_us.append(raw)
                bot_us.append(bot)
        notifier.stop()
        await task
        reader.cancel()
        await client.close()
        await standin.stop()
        for connection in (raw_client, consumer, publisher):
            await connection.aclose()
        return raw_us, bot_us

    async def delivery(self, burst: int, limit: int, window_s: float) -> dict[str, float]:
        publisher = await connect_async(self.url)
        await publisher.delete("trainer:events", WATCHING_KEY)
        run_ids = [f"burst-{i}" for i in range(burst)]
        await publisher.sadd(WATCHING_KEY, *run_ids)
        bus = AsyncEventBus(publisher)
        for run_id in run_ids:
            await bus.publish(_event(run_id))
        standin = TimedStandIn(limit=limit, window_s=window_s)
        standin.script(*(rate_limited(0.05) for _ in range(3)))
        rate = limit / window_s  # what the stand-in advertises
        # every notice kept (no overflow), paced at the advertised rate
        paced = NotifierConfig(
            group="bench-delivery",
            dm_limit=limit,
            dm_window_s=window_s,
            global_limit=10**6,
            max_notices=burst,
        )
        client, notifier, task, consumer = await self._bot(standin, paced)
        async with asyncio.timeout(burst / rate + 60):
            while len(standin.arrived) < burst and notifier.dropped == 0:
                await asyncio.sleep(0.05)
        notifier.stop()
        await task
        await client.close()
        await standin.stop()
        await consumer.aclose()
        await publisher.aclose()
        # steady state: from the message after the bucket's initial burst to the last one
        times = standin.message_times
        messages = len(times)
        per_s = (messages - 1 - limit) / ((times[-1] - times[limit]) / 1e9)
        return {
            "delivery_ratio": per_s / rate,
            "messages": messages,
            "messages_per_s": per_s,
            "advertised_per_s": rate,
            "served_429": standin.served_429,
            "unhandled_429": notifier.dropped + (burst - len(standin.arrived)),
        }

    async def pacing(self, runs: int, scale: float) -> dict[str, float]:
        """(c) `runs` parallel 5-minute runs in time scaled by `scale` (every duration the
        notifier and Discord know is scaled alike: the 5-per-5-s window, the live edit
        interval, the runs' own clock), a 429 and a restart at the half: the most messages
        (sends + edits) in any 5 s, and messages per run per minute."""
        publisher = await connect_async(self.url)
        await publisher.delete("trainer:events", WATCHING_KEY, LIVE_KEY, PACING)
        run_ids = [f"paced-{i}" for i in range(runs)]
        await publisher.sadd(WATCHING_KEY, *run_ids)
        bus = AsyncEventBus(publisher)
        standin = TimedStandIn(limit=DM_LIMIT, window_s=DM_WINDOW_S * scale)
        config = NotifierConfig(
            group="bench-pacing",
            dm_window_s=DM_WINDOW_S * scale,
            live_every_s=NotifierConfig.live_every_s * scale,
        )
        client, notifier, task, consumer = await self._bot(standin, config)
        for run_id in run_ids:
            for event in (factories.queued(run_id), factories.started(run_id)):
                await bus.publish(event)
            await bus.publish(factories.configured(run_id))
        started = time.monotonic()
        for second in range(RUN_S):  # one progress report per run per (scaled) second
            if second == RUN_S // 2:
                standin.script(rate_limited(1.0 * scale))
                notifier.stop()  # a restart: the new notifier continues the old window
                await task
                await consumer.aclose()
                notifier = Notifier(
                    AsyncEventBus(consumer := await connect_async(self.url)),
                    WatchStore(consumer),
                    DiscordSender(client),
                    OWNER_ID,
                    config,
                )
                task = asyncio.create_task(notifier.run())
            for run_id in run_ids:
                await bus.publish(factories.job_progress(run_id, step=second, total=RUN_S))
                await bus.publish(factories.metrics_progress(run_id, step=second))
                if second % 30 == 29:
                    await bus.publish(factories.evaluated(run_id, step=second))
                if second % 60 == 59:
                    await bus.publish(factories.checkpoint(run_id))
            # on the run's own clock: a slow round does not stretch the run
            await asyncio.sleep(max(0.0, started + (second + 1) * scale - time.monotonic()))
        for run_id in run_ids:
            await bus.publish(factories.completed(run_id))
        run_minutes = (time.monotonic() - started) / scale / 60
        async with asyncio.timeout(60):
            while not await _settled(publisher, "bench-pacing"):
                await asyncio.sleep(0.05)
        notifier.stop()
        await task
        await client.close()
        await standin.stop()
        await consumer.aclose()
        await publisher.aclose()
        writes = standin.channel_writes
        per_run = [
            sum(any(run_id in str(e.get("title")) for e in w.embeds) for w in writes)
            for run_id in run_ids
        ]
        return {
            "max_msgs_per_5s": max_in_window([w.at for w in writes], DM_WINDOW_S * scale),
            "msgs_per_run_minute": max(per_run) / run_minutes,
            "pacing_served_429": standin.served_429,
        }

    async def queued(self, submissions: int) -> float:
        """(d) `/train`'s order: the bot watches the run id it chose, then the API queues the
        run and publishes its `queued` event at once; the share of those notices delivered."""
        publisher = await connect_async(self.url)
        await publisher.delete("trainer:events", WATCHING_KEY, LIVE_KEY, PACING)
        standin = TimedStandIn(limit=1_000_000, window_s=1.0)
        wide_open = NotifierConfig(
            group="bench-queued", dm_limit=10**6, dm_window_s=1.0, global_limit=10**6
        )
        client, notifier, task, consumer = await self._bot(standin, wide_open)
        bus = AsyncEventBus(publisher)
        await asyncio.sleep(0.3)
        for i in range(submissions):
            await notifier.watches.watch(f"submitted-{i}")  # what actions.train does first
            await bus.publish(_event(f"submitted-{i}"))  # what the API does when it queues
        async with asyncio.timeout(60):
            while not await _settled(publisher, "bench-queued"):
                await asyncio.sleep(0.05)
        notifier.stop()
        await task
        await client.close()
        await standin.stop()
        await consumer.aclose()
        await publisher.aclose()
        delivered = {t for t in standin.arrived if t.startswith("Queued · submitted-")}
        return len(delivered) / submissions


async def _settled(client: redis.asyncio.Redis, group: str) -> bool:
    """The group has read the newest entry and acknowledged everything."""
    info = {g["name"]: g for g in await client.xinfo_groups("trainer:events")}
    entry = info.get(group.encode())
    newest = await client.xrevrange("trainer:events", count=1)
    if entry is None or not newest:
        return False
    return bool(entry["last-delivered-id"] == newest[0][0] and int(entry["pending"]) == 0)


async def run(url: str, args: argparse.Namespace) -> dict[str, object]:
    bench = Bench(url)
    raw_us, bot_us = await bench.latency(args.events, args.warmup)
    delivered = await bench.delivery(args.burst, args.limit, args.window_s)
    paced = await bench.pacing(args.runs, args.scale)
    queued_ratio = await bench.queued(args.submissions)
    p50, p99 = _percentile(bot_us, 50), _percentile(bot_us, 99)
    raw_p50, raw_p99 = _percentile(raw_us, 50), _percentile(raw_us, 99)
    return {
        "bench": "bot_events",
        "p50_ratio": round(p50 / raw_p50, 3),
        "p99_ratio": round(p99 / raw_p99, 3),
        "delivery_ratio": round(delivered["delivery_ratio"], 3),
        "unhandled_429": int(delivered["unhandled_429"]),
        "p50_us": round(p50, 1),
        "p99_us": round(p99, 1),
        "raw_p50_us": round(raw_p50, 1),
        "raw_p99_us": round(raw_p99, 1),
        "messages": int(delivered["messages"]),
        "messages_per_s": round(delivered["messages_per_s"], 2),
        "advertised_per_s": delivered["advertised_per_s"],
        "served_429": int(delivered["served_429"]),
        "max_msgs_per_5s": int(paced["max_msgs_per_5s"]),
        "msgs_per_run_minute": round(paced["msgs_per_run_minute"], 2),
        "queued_delivered_ratio": round(queued_ratio, 3),
        "pacing_served_429": int(paced["pacing_served_429"]),
        "events": args.events,
        "burst": args.burst,
        "runs": args.runs,
        "time_scale": args.scale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--burst", type=int, default=1_000)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--window-s", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.02)  # 5 minutes in 6 seconds
    parser.add_argument("--submissions", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_root:
        url, embedded = resolve_redis_url(os.environ.get("REDIS_URL"), Path(data_root))
        try:
            result = asyncio.run(run(url, args))
        finally:
            if embedded is not None:
                embedded.release()
    print(
        f"DM p50 {result['p50_us']} us p99 {result['p99_us']} us; raw p50 {result['raw_p50_us']} "
        f"us p99 {result['raw_p99_us']} us; {result['messages']} messages at "
        f"{result['messages_per_s']}/s of {result['advertised_per_s']}/s advertised; "
        f"at most {result['max_msgs_per_5s']} messages in 5 s, "
        f"{result['msgs_per_run_minute']} per run-minute, "
        f"queued delivered {result['queued_delivered_ratio']}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
