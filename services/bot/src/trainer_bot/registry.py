"""The model registry in the owner's DM.

- `/models`: every registered name with its production version; `/models model:<name>`: that
  model's versions with their stages, and its latest change (who, why). Both come from the
  API (`GET /models`, `GET /models/{name}/versions`) through the project's client.
- A notice for every retraining's verdict (`trainer_bot.retraining`) and every promotion
  and rollback, whoever made it and whether or not a run is
  watched: the API publishes `trainer.model.promoted.v1` / `rolled_back.v1` once the change
  committed, and the notifier queues `owner_notice`'s embed like any other notice (batched,
  paced by the DM channel's rate limit, acknowledged once Discord took it).
"""

from __future__ import annotations

import discord

from platform_core import api_calls
from platform_core.api_models import ModelList, ModelVersionList
from platform_core.events import Event, ModelPromoted, ModelRetrained, ModelRolledBack
from trainer_bot.actions import BotServices, Reply
from trainer_bot.embeds import NONE, QUEUED, STOPPED, SUCCESS
from trainer_bot.limits import clamp_embed
from trainer_bot.retraining import retrained_embed

STAGE_MARKS = {"production": "🟢", "staging": "🟡", "archived": "⚪"}


async def models(services: BotServices, name: str | None = None) -> Reply:
    """`/models`: the registered names, or one name's versions."""
    if name is None:
        return Reply(embed=models_embed(await services.api.call(api_calls.LIST_MODELS)))
    return Reply(embed=versions_embed(await services.api.call(api_calls.model_versions(name))))


def models_embed(listed: ModelList) -> discord.Embed:
    lines = [
        f"`{model.name}` · production {model.production or NONE} · "
        f"{model.versions} version{'s' if model.versions != 1 else ''}"
        for model in listed.items
    ]
    embed = discord.Embed(
        title="Models", description="\n".join(lines) or "No model is registered yet.", colour=QUEUED
    )
    return clamp_embed(embed)


def versions_embed(listed: ModelVersionList) -> discord.Embed:
    """Newest version first: the one a reader asks about is usually the latest."""
    lines = [
        f"{STAGE_MARKS[item.stage]} `{item.version}` · {item.stage}"
        for item in reversed(listed.items)
    ]
    embed = discord.Embed(
        title=f"Model {listed.name}",
        description="\n".join(lines),
        colour=SUCCESS if listed.production else QUEUED,
    )
    embed.add_field(name="Production", value=listed.production or NONE)
    if listed.history:
        last = listed.history[-1]
        change = f"{last.action} {last.version} by {last.actor}"
        embed.add_field(
            name="Last change", value=change + (f": {last.reason}" if last.reason else "")
        )
    return clamp_embed(embed)


def stage_change_embed(event: ModelPromoted | ModelRolledBack) -> discord.Embed:
    change = event.payload
    if isinstance(event, ModelRolledBack):
        title, colour = f"Rolled back · {change.name} → {change.version}", STOPPED
    else:
        title = f"Promoted · {change.name} {change.version}"
        colour = SUCCESS if change.to_stage == "production" else QUEUED
    embed = discord.Embed(title=title, colour=colour, timestamp=event.ts)
    embed.add_field(name="Stage", value=f"{change.from_stage} → {change.to_stage}")
    embed.add_field(name="Production before", value=change.previous_production or NONE)
    embed.add_field(name="By", value=change.actor)
    if change.reason:
        embed.add_field(name="Why", value=change.reason, inline=False)
    embed.set_footer(text=f"{event.type} · run {event.run_id}")
    return clamp_embed(embed)


def owner_notice(event: Event) -> discord.Embed | None:
    """The notice of an event that always reaches the owner, watched run or not (a registry
    change); None for every other event."""
    if isinstance(event, ModelPromoted | ModelRolledBack):
        return stage_change_embed(event)
    if isinstance(event, ModelRetrained):
        return retrained_embed(event)
    return None
