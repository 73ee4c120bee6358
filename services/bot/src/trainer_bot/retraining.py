"""Retraining from the owner's DM: `/retrain model:<name>` (names autocompleted from the
registry) queues a retraining through the API, and the verdict, promoted or kept, reaches the
owner as a notice (`trainer.model.retrained.v1`, watched run or not, like registry changes)."""

from __future__ import annotations

import discord

from platform_core import api_calls
from platform_core.events import ModelRetrained
from platform_core.retrain_specs import RetrainRequest
from trainer_bot.actions import BotServices, Reply
from trainer_bot.embeds import QUEUED, SUCCESS
from trainer_bot.limits import clamp_embed


async def retrain(services: BotServices, name: str) -> Reply:
    """`/retrain`: queue the chain; the owner is told the verdict when it comes."""
    owner = services.owner_id
    body = RetrainRequest(user_id=owner, actor=str(owner) if owner else "discord")
    accepted = await services.api.call(api_calls.retrain_model(name, body))
    links = [accepted.dataset_run, accepted.train_run, accepted.run_id]
    return Reply(
        text=(
            f"Retraining `{name}` against production {accepted.production_version}: "
            + " → ".join(f"`{link}`" for link in links if link)
            + ". You will get the verdict here."
        )
    )


async def model_names(services: BotServices, typed: str, limit: int) -> list[str]:
    """Registered names containing what the owner typed."""
    listed = await services.api.call(api_calls.LIST_MODELS)
    return [m.name for m in listed.items if typed.lower() in m.name.lower()][:limit]


def retrained_embed(event: ModelRetrained) -> discord.Embed:
    verdict = event.payload
    promoted = verdict.decision == "PROMOTE"
    title = (
        f"Retrained · {verdict.name} {verdict.candidate_version} promoted"
        if promoted
        else f"Retrained · {verdict.name} kept {verdict.production_version}"
    )
    embed = discord.Embed(title=title, colour=SUCCESS if promoted else QUEUED, timestamp=event.ts)
    embed.add_field(
        name="Accuracy",
        value=f"{verdict.current_accuracy:.3f} → {verdict.candidate_accuracy:.3f}",
    )
    embed.add_field(name="McNemar p", value=f"{verdict.p_value:.3g}")
    embed.add_field(name="Trigger", value=verdict.trigger.replace("_", " "))
    embed.add_field(name="Dataset", value=verdict.dataset_id)
    embed.add_field(name="Why", value=verdict.reason, inline=False)
    embed.set_footer(text=f"{verdict.report} · run {event.run_id}")
    return clamp_embed(embed)
