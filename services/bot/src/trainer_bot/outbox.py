"""What waits to be sent to the owner's DM, and how it is batched.

- Notices (one embed per event that needs attention: queued, started, failed, completed...)
  queue in order and are packed into messages of up to 10 embeds and 6,000 characters, so a
  backlog after an outage goes out as a few digests. (Progress, evals and checkpoints are not
  notices: they edit the run's live message, see `notifier`.)
- When notices pile up past `max_notices` (Discord refusing, a long outage), the oldest
  non-terminal ones are dropped; a terminal notice (completed, failed, cancelled) never is.

Each notice keeps the ids of the bus entries it stands for: the notifier acknowledges them
once the message is sent (or the notice was dropped), so a restart re-delivers everything
that had not reached Discord yet.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import discord

from trainer_bot.limits import fits

# Notices waiting beyond this are summarised away: 100 embeds are ten full messages, more
# than anyone reads after an outage; terminal notices are kept whatever the count.
MAX_NOTICES = 100
FILES_MAX = 10  # Discord: attachments per message


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    data: bytes


@dataclass(slots=True)
class Notice:
    embed: discord.Embed  # already clamped to Discord's per-embed limits
    ack_ids: list[str]
    terminal: bool = False
    attachments: tuple[Attachment, ...] = ()  # a run's chart, a study's plots


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    embeds: list[discord.Embed]
    attachments: list[Attachment] = field(default_factory=list)
    ack_ids: list[str] = field(default_factory=list)
    live: bool = False  # a run's live status message (the console redraws it in place)


class Outbox:
    def __init__(self, max_notices: int = MAX_NOTICES) -> None:
        self.max_notices = max_notices
        self._notices: deque[Notice] = deque()

    def __len__(self) -> int:
        return len(self._notices)

    def add(self, notice: Notice) -> list[str]:
        """Queue `notice`; returns the ack ids of notices dropped to make room."""
        self._notices.append(notice)
        dropped: list[str] = []
        while len(self._notices) > self.max_notices:
            victim = next((n for n in self._notices if not n.terminal), None)
            if victim is None:
                break  # only terminal notices left: keep them all
            self._notices.remove(victim)
            dropped.extend(victim.ack_ids)
        return dropped

    def next_message(self) -> OutgoingMessage | None:
        """Pop the longest run of queued notices that fits in one message."""
        if not self._notices:
            return None
        embeds: list[discord.Embed] = []
        attachments: list[Attachment] = []
        ack_ids: list[str] = []
        while self._notices:
            notice = self._notices[0]
            files = len(attachments) + len(notice.attachments)
            if embeds and (files > FILES_MAX or not fits([*embeds, notice.embed])):
                break
            self._notices.popleft()
            embeds.append(notice.embed)
            attachments.extend(notice.attachments)
            ack_ids.extend(notice.ack_ids)
        return OutgoingMessage(embeds, attachments, ack_ids)
