"""`/watch`'s catch-up: a watcher who joins mid-run sees where it is, its state and its last
few progress and eval events (read from the run's event stream through the API), and the
live updates that follow start after what the catch-up showed.

The API answers the events with `read_at`, the stream's newest entry when it read them; the
watch starts there (`WatchStore.watch(after=...)`), so the notifier passes over the run's
entries up to it, which the catch-up already covered, and never repeats them.
"""

from __future__ import annotations

from typing import Final

import discord

from platform_core import api_calls
from platform_core.api_models import RecentEvents
from platform_core.events import Event, MetricsEval, MetricsProgress
from platform_core.http_client import AsyncTrainerClient
from trainer_bot.embeds import format_metric, format_rate
from trainer_bot.limits import clamp_embed

CATCH_UP_EVENTS: Final = 5  # a glance at the trend; the chart (/status) has the whole history
CATCH_UP_TYPES: Final = tuple(
    str(model.model_fields["type"].default) for model in (MetricsProgress, MetricsEval)
)


async def recent(api: AsyncTrainerClient, run_id: str) -> RecentEvents:
    """The run's last few progress and eval events; NOT_FOUND (an ApiError) for no such run."""
    return await api.call(api_calls.recent_events(run_id, CATCH_UP_TYPES, limit=CATCH_UP_EVENTS))


def with_recent(embed: discord.Embed, recent: RecentEvents) -> discord.Embed:
    """`embed` (the run's status) with a "Recent" field, oldest line first."""
    lines = [event_line(item.event) for item in recent.items]
    if lines:
        embed.add_field(name="Recent", value="\n".join(lines), inline=False)
    return clamp_embed(embed)


def event_line(event: Event) -> str:
    if isinstance(event, MetricsEval):
        eval_ = event.payload
        return (
            f"step {eval_.step:,} · eval loss {format_metric(eval_.eval_loss)}"
            f" · perplexity {format_metric(eval_.perplexity)}"
        )
    if isinstance(event, MetricsProgress):
        progress = event.payload
        return (
            f"step {progress.step:,} · loss {format_metric(progress.loss)}"
            f" · {format_rate(progress.tokens_per_s)} tokens/s"
        )
    return event.type  # the API answers only the asked types; a new one still reads
