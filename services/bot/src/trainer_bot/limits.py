"""Discord's size limits on embeds and messages, and fitting embeds into them.

Discord refuses a whole message when one embed breaks a limit, so every embed the bot sends
is clamped first (`clamp_embed`) and messages are packed (`fits`) so that a message never
carries more than 10 embeds or 6,000 embed characters in all.
"""

from __future__ import annotations

from collections.abc import Sequence

import discord

TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
EMBED_CHARS_MAX = 6000  # one embed, and all the embeds of one message together
EMBEDS_PER_MESSAGE_MAX = 10
ELLIPSIS = "…"


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, an ellipsis marking the cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 1] + ELLIPSIS


def clamp_embed(embed: discord.Embed) -> discord.Embed:
    """A copy of `embed` within every per-embed limit: long texts are cut, fields beyond 25
    dropped (the last one says how many), and fields dropped from the end while the total is
    over 6,000 characters."""
    clamped = discord.Embed(
        title=truncate(embed.title, TITLE_MAX) if embed.title else None,
        description=truncate(embed.description, DESCRIPTION_MAX) if embed.description else None,
        colour=embed.colour,
        timestamp=embed.timestamp,
    )
    if embed.footer.text:
        clamped.set_footer(text=truncate(embed.footer.text, FOOTER_MAX))
    if embed.image.url:
        clamped.set_image(url=embed.image.url)
    fields = [(f.name or "", f.value or "", bool(f.inline)) for f in embed.fields]
    if len(fields) > FIELDS_MAX:
        hidden = len(fields) - (FIELDS_MAX - 1)
        fields = [*fields[: FIELDS_MAX - 1], ("…", f"{hidden} more not shown", False)]
    for name, value, inline in fields:
        clamped.add_field(
            name=truncate(name, FIELD_NAME_MAX) or "\u200b",
            value=truncate(value, FIELD_VALUE_MAX) or "\u200b",
            inline=inline,
        )
    while len(clamped) > EMBED_CHARS_MAX and clamped.fields:
        clamped.remove_field(len(clamped.fields) - 1)
    if len(clamped) > EMBED_CHARS_MAX and clamped.description:
        room = EMBED_CHARS_MAX - (len(clamped) - len(clamped.description))
        clamped.description = truncate(clamped.description, room)
    return clamped


def fits(embeds: Sequence[discord.Embed]) -> bool:
    """Whether `embeds` (each already clamped) may travel in one message."""
    return (
        len(embeds) <= EMBEDS_PER_MESSAGE_MAX
        and sum(len(embed) for embed in embeds) <= EMBED_CHARS_MAX
    )
