"""The owner check and the words for failures, in one place: the command tree runs them for
every command and autocomplete, the views for every button."""

from __future__ import annotations

import logging

import discord

from platform_core.errors import AppError
from platform_core.http_client import ApiError

logger = logging.getLogger(__name__)

REFUSAL = "Sorry, this bot only answers its owner, in direct messages."


async def owner_only(interaction: discord.Interaction, owner_id: int | None) -> bool:
    """The owner check: True for the owner in a DM. Anyone else, or the owner anywhere else,
    gets a short refusal (an empty list for an autocomplete) and is logged by id only: the
    text they sent never reaches the log."""
    if owner_id is not None and interaction.user.id == owner_id and interaction.guild_id is None:
        return True
    logger.warning(
        "refused an interaction: not the owner, or not in a DM",
        extra={"event": "bot.refused", "user_id": interaction.user.id},
    )
    if interaction.type is discord.InteractionType.autocomplete:
        await interaction.response.autocomplete([])
    else:
        await interaction.response.send_message(REFUSAL, ephemeral=True)
    return False


def explain(error: BaseException) -> str:
    """A failure in words the owner can act on."""
    if isinstance(error, ApiError) and error.status == 0:
        return "I can't reach the trainer API right now. Is it running? Try again in a moment."
    if isinstance(error, ApiError):
        return f"The trainer API said: {error.message} ({error.code})"
    if isinstance(error, AppError):
        return f"{error.message} ({error.code.value})"
    if isinstance(error, TimeoutError):
        return "The worker has not answered yet; it may be busy. Try again in a moment."
    return "Something went wrong on my side; the details are in the bot's log."


async def report_failure(interaction: discord.Interaction, error: BaseException) -> None:
    """Tell the owner what failed (whether or not the interaction was deferred); log it when
    it is not one of the expected, typed failures."""
    if not isinstance(error, ApiError | AppError | TimeoutError):
        logger.error("command failed", exc_info=error, extra={"event": "bot.command_failed"})
    if interaction.response.is_done():
        await interaction.followup.send(explain(error))
    else:
        await interaction.response.send_message(explain(error))
