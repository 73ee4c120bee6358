from __future__ import annotations

import discord

from trainer_bot.limits import EMBED_CHARS_MAX, EMBEDS_PER_MESSAGE_MAX
from trainer_bot.outbox import Attachment, Notice, Outbox


def notice(name: str, *, terminal: bool = False, size: int = 10) -> Notice:
    return Notice(discord.Embed(title=name, description="d" * size), [name], terminal=terminal)


def test_notices_are_packed_ten_to_a_message_in_order() -> None:
    outbox = Outbox()
    for i in range(25):
        outbox.add(notice(f"n{i}"))
    sizes = []
    order: list[str] = []
    while (message := outbox.next_message()) is not None:
        sizes.append(len(message.embeds))
        order.extend(message.ack_ids)
    assert sizes == [EMBEDS_PER_MESSAGE_MAX, EMBEDS_PER_MESSAGE_MAX, 5]
    assert order == [f"n{i}" for i in range(25)]
    assert len(outbox) == 0


def test_a_message_never_carries_more_than_6000_embed_characters() -> None:
    outbox = Outbox()
    for i in range(4):
        outbox.add(notice(f"n{i}", size=2500))
    first = outbox.next_message()
    assert first is not None
    assert len(first.embeds) == 2
    assert sum(len(e) for e in first.embeds) <= EMBED_CHARS_MAX


def test_attachments_travel_with_their_embed() -> None:
    outbox = Outbox()
    chart = Attachment("loss-run-1.png", b"png")
    outbox.add(Notice(discord.Embed(title="done"), ["1-0"], terminal=True, attachments=(chart,)))
    outbox.add(notice("next"))
    message = outbox.next_message()
    assert message is not None
    assert message.attachments == [chart]
    assert message.ack_ids == ["1-0", "next"]


def test_a_message_carries_at_most_ten_files() -> None:
    outbox = Outbox()
    plots = tuple(Attachment(f"plot-{i}.png", b"png") for i in range(2))
    for i in range(6):  # six finished studies, two plots each
        outbox.add(Notice(discord.Embed(title=f"study {i}"), [f"{i}-0"], attachments=plots))
    first, second = outbox.next_message(), outbox.next_message()
    assert first is not None and second is not None
    assert (len(first.embeds), len(first.attachments)) == (5, 10)
    assert (len(second.embeds), len(second.attachments)) == (1, 2)


def test_overflow_drops_the_oldest_non_terminal_notice_never_a_terminal_one() -> None:
    outbox = Outbox(max_notices=3)
    assert outbox.add(notice("done", terminal=True)) == []
    assert outbox.add(notice("a")) == []
    assert outbox.add(notice("b")) == []
    assert outbox.add(notice("c")) == ["a"]
    assert outbox.add(notice("failed", terminal=True)) == ["b"]
    assert outbox.add(notice("cancelled", terminal=True)) == ["c"]
    # only terminal notices left: the outbox grows rather than lose one
    assert outbox.add(notice("again", terminal=True)) == []
    message = outbox.next_message()
    assert message is not None
    assert message.ack_ids == ["done", "failed", "cancelled", "again"]
