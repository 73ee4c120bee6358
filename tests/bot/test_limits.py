from __future__ import annotations

import discord

from trainer_bot.limits import (
    DESCRIPTION_MAX,
    EMBED_CHARS_MAX,
    EMBEDS_PER_MESSAGE_MAX,
    FIELD_NAME_MAX,
    FIELD_VALUE_MAX,
    FIELDS_MAX,
    FOOTER_MAX,
    TITLE_MAX,
    clamp_embed,
    fits,
    truncate,
)


def test_truncate_marks_the_cut() -> None:
    assert truncate("abc", 3) == "abc"
    assert truncate("abcdef", 4) == "abc…"
    assert len(truncate("x" * 1000, 256)) == 256


def test_clamp_cuts_every_text_to_its_limit() -> None:
    embed = discord.Embed(title="t" * 300, description="d" * 2000, colour=discord.Colour.red())
    embed.set_footer(text="f" * 3000)
    embed.set_image(url="attachment://loss.png")
    embed.add_field(name="n" * 300, value="v" * 2000, inline=False)
    embed.add_field(name="", value="")
    clamped = clamp_embed(embed)
    assert len(clamped.title or "") == TITLE_MAX
    assert len(clamped.footer.text or "") == FOOTER_MAX
    assert len(clamped.fields[0].name or "") == FIELD_NAME_MAX
    assert len(clamped.fields[0].value or "") == FIELD_VALUE_MAX
    assert clamped.fields[0].inline is False
    assert clamped.fields[1].name == "\u200b"  # Discord refuses empty field texts
    assert clamped.image.url == "attachment://loss.png"
    assert clamped.colour == discord.Colour.red()
    assert clamped.description == "d" * 2000


def test_clamp_cuts_the_description_when_fields_alone_cannot_make_room() -> None:
    embed = discord.Embed(title="t" * 300, description="d" * 5000)
    embed.set_footer(text="f" * 3000)
    embed.add_field(name="n", value="v")
    clamped = clamp_embed(embed)
    assert clamped.fields == []
    assert len(clamped) == EMBED_CHARS_MAX
    assert (clamped.description or "").endswith("…")
    assert len(clamped.description or "") < DESCRIPTION_MAX


def test_clamp_keeps_25_fields_and_says_how_many_were_hidden() -> None:
    embed = discord.Embed(title="many")
    for i in range(40):
        embed.add_field(name=f"f{i}", value=str(i))
    clamped = clamp_embed(embed)
    assert len(clamped.fields) == FIELDS_MAX
    assert clamped.fields[-1].value == "16 more not shown"
    assert clamped.fields[-2].name == "f23"


def test_clamp_drops_trailing_fields_over_6000_characters() -> None:
    embed = discord.Embed(title="big")
    for i in range(10):
        embed.add_field(name=f"f{i}", value="v" * 1000)
    clamped = clamp_embed(embed)
    assert len(clamped) <= EMBED_CHARS_MAX
    assert [f.name for f in clamped.fields] == [f"f{i}" for i in range(5)]


def test_clamp_leaves_a_small_embed_as_it_was() -> None:
    embed = discord.Embed(title="small", description="ok")
    embed.add_field(name="a", value="1")
    clamped = clamp_embed(embed)
    assert clamped.to_dict() == embed.to_dict()


def test_fits_counts_embeds_and_characters() -> None:
    small = discord.Embed(title="x" * 10)
    assert fits([small] * EMBEDS_PER_MESSAGE_MAX)
    assert not fits([small] * (EMBEDS_PER_MESSAGE_MAX + 1))
    big = discord.Embed(description="d" * 3500)
    assert fits([big])
    assert not fits([big, big])
