"""Where a DM goes: `ConsoleSender` writes it to the log (no `DISCORD_TOKEN`: the embedded
default), `DiscordSender` sends it through discord.py's HTTP client. Both raise
`DeliveryRateLimited` for a 429 the caller must wait out, `DiscordUnreachable` when Discord
cannot take anything right now and `DeliveryFailed` when it refuses this message, so the
notifier handles one vocabulary whichever is in use."""

from __future__ import annotations

import io
import json
import logging
from typing import Protocol

import aiohttp
import discord

from platform_core.http_core import parse_retry_after
from trainer_bot.outbox import OutgoingMessage

logger = logging.getLogger(__name__)

# A 429 with no `Via` header comes from Cloudflare, not from Discord's API: discord.py does not
# retry it and it may name no wait. An hour-long ban is possible; a minute is a sane first wait.
DEFAULT_RETRY_AFTER_S = 60.0


class DeliveryRateLimited(Exception):
    """Discord answered 429; nothing was sent, retry after `retry_after_s`."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limited by Discord for {retry_after_s:.2f}s")
        self.retry_after_s = retry_after_s


class DiscordUnreachable(Exception):
    """Discord could not be reached, or answered with a server error; nothing was sent. Retry
    later: the message is not at fault."""


class DeliveryFailed(Exception):
    """Discord refused the message (a 4xx other than 429: DMs closed, a bad payload)."""


class Sender(Protocol):
    async def send(self, recipient: int, message: OutgoingMessage) -> None: ...


def describe(message: OutgoingMessage) -> str:
    """The message as one JSON object: its embeds as Discord receives them, attachments by
    name and size."""
    return json.dumps(
        {
            "embeds": [embed.to_dict() for embed in message.embeds],
            "attachments": [
                {"filename": a.filename, "bytes": len(a.data)} for a in message.attachments
            ],
        },
        ensure_ascii=False,
        sort_keys=True,
    )


class ConsoleSender:
    """Console mode: each DM is one structured log line (event `bot.dm`)."""

    async def send(self, recipient: int, message: OutgoingMessage) -> None:
        logger.info("DM %s", describe(message), extra={"event": "bot.dm", "user_id": recipient})


class DiscordSender:
    """Sends through a logged-in `discord.Client`'s HTTP layer: opening the DM channel and
    posting a message are plain REST calls, so no gateway connection is needed for this."""

    def __init__(self, client: discord.Client) -> None:
        self._client = client

    async def send(self, recipient: int, message: OutgoingMessage) -> None:
        files = [discord.File(io.BytesIO(a.data), filename=a.filename) for a in message.attachments]
        try:
            # discord.py keeps the channel once opened: one POST users/@me/channels per owner
            channel = await self._client.create_dm(discord.Object(id=recipient))
            await channel.send(embeds=message.embeds, files=files)
        except discord.RateLimited as exc:  # longer than the client's max_ratelimit_timeout
            raise DeliveryRateLimited(exc.retry_after) from exc
        except discord.DiscordServerError as exc:  # discord.py already retried what it retries
            raise DiscordUnreachable(f"Discord answered HTTP {exc.status}") from exc
        except discord.HTTPException as exc:
            if exc.status == 429:  # a Cloudflare ban: discord.py does not retry those
                wait = parse_retry_after(exc.response.headers.get("Retry-After"))
                raise DeliveryRateLimited(wait or DEFAULT_RETRY_AFTER_S) from exc
            raise DeliveryFailed(f"Discord answered HTTP {exc.status} (code {exc.code})") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise DiscordUnreachable(f"cannot reach Discord: {type(exc).__name__}") from exc
