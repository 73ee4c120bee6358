"""Where a DM goes: `ConsoleSender` writes it as readable text (no `DISCORD_TOKEN`: the
embedded default) and saves charts as PNG files, `DiscordSender` sends it through discord.py's
HTTP client. A message is sent (answering its id) or edited in place by that id. Both raise
`DeliveryRateLimited` for a 429 the caller must wait out, `DiscordUnreachable` when Discord
cannot take anything right now and `DeliveryFailed` when it refuses this message, so the
notifier handles one vocabulary whichever is in use."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import aiohttp
import discord

from platform_core.http_core import parse_retry_after
from trainer_bot.outbox import Attachment, OutgoingMessage

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
    async def send(self, recipient: int, message: OutgoingMessage) -> int:
        """Post `message`; answers its message id (for later edits)."""
        ...

    async def edit(self, recipient: int, message_id: int, message: OutgoingMessage) -> None:
        """Replace the embeds of message `message_id` with `message`'s."""
        ...


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


class ConsoleOutput(Protocol):
    def notice(self, text: str) -> None:
        """One notice, on a line of its own."""
        ...

    def live(self, text: str) -> None:
        """The live status of a run: a line redrawn in place where the output allows it."""
        ...


class LogOutput:
    """The service's console mode: each notice and each live update is one log line."""

    def __init__(self, recipient: int) -> None:
        self.recipient = recipient

    def notice(self, text: str) -> None:
        logger.info("%s", text, extra={"event": "bot.dm", "user_id": self.recipient})

    def live(self, text: str) -> None:
        logger.info("%s", text, extra={"event": "bot.live", "user_id": self.recipient})


class ConsoleSender:
    """Console mode: notices as readable lines (one per embed), the live status as a redrawn
    line, charts saved as PNG files under `chart_dir` (named after the attachment)."""

    def __init__(self, output: ConsoleOutput | None = None, chart_dir: Path | None = None) -> None:
        self.output = output
        self.chart_dir = chart_dir
        self._ids = itertools.count(1)

    async def send(self, recipient: int, message: OutgoingMessage) -> int:
        output = self.output or LogOutput(recipient)
        for embed in message.embeds:
            (output.live if message.live else output.notice)(embed_text(embed))
        for attachment in message.attachments:
            output.notice(self._save(attachment))
        return next(self._ids)

    async def edit(self, recipient: int, message_id: int, message: OutgoingMessage) -> None:
        output = self.output or LogOutput(recipient)
        for embed in message.embeds:
            output.live(embed_text(embed))

    def _save(self, attachment: Attachment) -> str:
        if self.chart_dir is None:
            return f"chart {attachment.filename} ({len(attachment.data):,} bytes, not saved)"
        self.chart_dir.mkdir(parents=True, exist_ok=True)
        path = self.chart_dir / attachment.filename
        path.write_bytes(attachment.data)
        return f"chart saved to {path}"


def embed_text(embed: discord.Embed) -> str:
    """An embed as one readable line: `Title · description · Name: value · ...`."""
    parts = [embed.title or ""]
    if embed.description:
        parts.append(embed.description.replace("\n", " "))
    parts += [f"{field.name}: {field.value}" for field in embed.fields]
    return " · ".join(part for part in parts if part)


class DiscordSender:
    """Sends through a logged-in `discord.Client`'s HTTP layer: opening the DM channel and
    posting a message are plain REST calls, so no gateway connection is needed for this."""

    def __init__(self, client: discord.Client) -> None:
        self._client = client

    async def send(self, recipient: int, message: OutgoingMessage) -> int:
        files = [discord.File(io.BytesIO(a.data), filename=a.filename) for a in message.attachments]
        with _typed_errors():
            # discord.py keeps the channel once opened: one POST users/@me/channels per owner
            channel = await self._client.create_dm(discord.Object(id=recipient))
            sent = await channel.send(embeds=message.embeds, files=files)
        return sent.id

    async def edit(self, recipient: int, message_id: int, message: OutgoingMessage) -> None:
        with _typed_errors():
            channel = await self._client.create_dm(discord.Object(id=recipient))
            await channel.get_partial_message(message_id).edit(embeds=message.embeds)


@contextlib.contextmanager
def _typed_errors() -> Iterator[None]:
    """discord.py's and aiohttp's failures as the notifier's three."""
    try:
        yield
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
