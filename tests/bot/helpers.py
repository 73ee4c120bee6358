"""What the bot's async tests share: running a notifier until a condition holds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import discord
import pytest
import redis

from platform_core.event_bus import EventBus
from platform_core.events import Event
from tests.bot import factories
from tests.bot.discord_standin import DiscordStandIn
from trainer_bot.notifier import Notifier, NotifierConfig

TOKEN = "stand-in-token"

# Short waits so the tests run in well under a second per scenario; the behaviour is the same
# as with the production defaults, only sooner.
FAST = NotifierConfig(
    block_ms=20,
    live_every_s=0.05,
    dm_limit=5,
    dm_window_s=0.05,
    backoff_s=0.0,
    backoff_jitter=0.0,
)
WAIT_S = 20.0  # a deadline for "eventually", never an assertion about speed


async def run_until(notifier: Notifier, done: Callable[[], bool]) -> None:
    """Run `notifier` until `done()` holds, then stop it and wait for it to finish."""
    task = asyncio.create_task(notifier.run())
    try:
        async with asyncio.timeout(WAIT_S):
            while not done():
                if task.done():
                    task.result()  # surface the loop's exception
                await asyncio.sleep(0.01)
    finally:
        notifier.stop()
        await task


@contextlib.asynccontextmanager
async def discord_client(
    standin: DiscordStandIn,
    monkeypatch: pytest.MonkeyPatch,
    client: discord.Client | None = None,
) -> AsyncIterator[discord.Client]:
    """`client` (a plain discord.Client by default) logged in to the running `standin`: REST
    only, no gateway."""
    monkeypatch.setattr(discord.http.Route, "BASE", await standin.start())
    client = client or discord.Client(intents=discord.Intents.none())
    try:
        await client.login(TOKEN)
        yield client
    finally:
        await client.close()
        await standin.stop()


def publish(client: redis.Redis, *events: Event) -> None:
    bus = EventBus(client)
    for event in events:
        bus.publish(event)


def pending(client: redis.Redis, group: str = "discord-bot") -> int:
    """Entries delivered to the bot and not acknowledged; -1 before its group exists."""
    try:
        return int(client.xpending("trainer:events", group)["pending"])
    except redis.ResponseError:
        return -1


def settled(client: redis.Redis, group: str = "discord-bot") -> bool:
    """The bot has read every entry of the stream and acknowledged each one."""
    groups = {g["name"]: g for g in client.xinfo_groups("trainer:events")}
    if group.encode() not in groups:
        return False
    newest = EventBus(client).last_id().encode()
    return groups[group.encode()]["last-delivered-id"] == newest and pending(client) == 0


def max_in_window(times: list[float], window_s: float) -> int:
    """The most of `times` (seconds) that fall in any `window_s`-long window."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(ordered):
        while at - ordered[start] >= window_s:
            start += 1
        most = max(most, end - start + 1)
    return most


def run_events(run_id: str, progress_steps: int) -> list[Event]:
    """One run's events: 3 notices (queued, started, completed), and config, evals,
    a checkpoint and `progress_steps` pairs of progress events for its live message."""
    events: list[Event] = [factories.queued(run_id), factories.started(run_id)]
    events.append(factories.configured(run_id))
    for step in range(progress_steps):
        events.append(factories.job_progress(run_id, step=step, total=progress_steps))
        events.append(factories.metrics_progress(run_id, step=step, loss=3.0 - step / 200))
        if step in {progress_steps // 2, progress_steps - 1}:
            events.append(factories.evaluated(run_id, step=step))
    events += [factories.checkpoint(run_id), factories.completed(run_id)]
    return events
