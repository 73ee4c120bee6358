"""The notifier: events of watched runs, from the bus to the owner's DM.

Two loops share one outbox:

- `consume` reads the bus through the bot's consumer group. It first walks the entries it was
  given before a restart and never acknowledged, then new ones. Events of unwatched runs are
  acknowledged at once; the others become notices or held progress (see `outbox`).
- `deliver` sends what the outbox holds, paced by a token bucket (the DM's own rate), every
  `summary_every_s` turns held progress into one summary per run, and acknowledges entries only
  once the message that carries them was sent. A 429 blocks the bucket for its `retry_after`
  and the same message is sent again; an outage of Discord is waited out the same way; only
  a message Discord refuses outright (a 4xx) is dropped, after `max_send_attempts`.

So a restart loses nothing: whatever had not reached Discord is still pending in the group.

Each loop stamps the bot's heartbeat (see `heartbeat`) as it goes round; the delivery loop
never naps longer than `heartbeat_every_s`, so a quiet bot still shows that it is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from platform_core.event_bus import AsyncEventBus, Delivery
from platform_core.events import JobCompleted, JobProgress, MetricsProgress
from trainer_bot.charts import loss_chart_png
from trainer_bot.embeds import event_embed, summary_embed
from trainer_bot.heartbeat import Heartbeat, always_connected
from trainer_bot.outbox import Attachment, Notice, Outbox, OutgoingMessage
from trainer_bot.rate_limit import TokenBucket
from trainer_bot.run_tracker import RunSnapshot
from trainer_bot.senders import DeliveryFailed, DeliveryRateLimited, DiscordUnreachable, Sender
from trainer_bot.watch_store import WatchStore

logger = logging.getLogger(__name__)

READING_PENDING = "0"  # XREADGROUP from "0": what this consumer was given and never acked
READING_NEW = ">"


@dataclass(frozen=True)
class NotifierConfig:
    group: str = "discord-bot"  # the bot's consumer group on the event stream
    consumer: str = "bot"  # one bot process per token, so one consumer name
    summary_every_s: float = 300.0  # seed 003 §29: progress summaries every 5-10 minutes
    bucket_capacity: float = 5.0  # Discord takes about 5 messages per DM channel in a burst
    bucket_refill_per_s: float = 1.0  # and about one a second after that
    read_count: int = 100  # entries per XREADGROUP
    block_ms: int = 1_000  # longest wait for new entries; also how fast `stop()` is noticed
    max_notices: int = 100  # waiting notices beyond this drop the oldest non-terminal one
    max_send_attempts: int = 3  # a message Discord refuses (4xx, not 429) this often is dropped
    failure_backoff_s: float = 5.0  # wait before sending again after a refusal or an outage
    heartbeat_every_s: float = 10.0  # well inside the health check's MAX_AGE_S (120 s)


class Notifier:
    def __init__(
        self,
        bus: AsyncEventBus,
        watches: WatchStore,
        sender: Sender,
        recipient: int,
        config: NotifierConfig | None = None,
        *,
        connected: Callable[[], bool] = always_connected,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.watches = watches
        self.sender = sender
        self.recipient = recipient
        self.config = config or NotifierConfig()
        self.outbox = Outbox(self.config.max_notices)
        self.bucket = TokenBucket(
            self.config.bucket_capacity, self.config.bucket_refill_per_s, clock=clock
        )
        self._clock = clock
        self.heartbeat = Heartbeat(bus.client, self.config.heartbeat_every_s, connected)
        self._snapshots: dict[str, RunSnapshot] = {}
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._next_summary = clock() + self.config.summary_every_s
        # counters, for logs, tests and the benchmark
        self.sent = 0  # messages Discord accepted
        self.rate_limited = 0  # 429s waited out (each message was then sent again)
        self.dropped = 0  # entries acknowledged without being sent (overflow, refusals)

    def stop(self) -> None:
        """Ask both loops to finish; entries not yet sent stay pending for the next start."""
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        """Restore the watches, then consume and deliver until `stop()`."""
        watching = await self.watches.restore()
        logger.info(
            "notifier started; watching %d runs", len(watching), extra={"event": "bot.started"}
        )
        await self.bus.ensure_group(self.config.group, start_id="0")
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.consume())
            tasks.create_task(self.deliver())

    # ---- reading the bus --------------------------------------------------------------------

    async def consume(self) -> None:
        cursor = READING_PENDING
        while not self._stopping:
            await self.heartbeat.beat("consume")
            reading_new = cursor == READING_NEW
            deliveries = await self.bus.consume(
                self.config.group,
                self.config.consumer,
                count=self.config.read_count,
                block_ms=self.config.block_ms if reading_new else None,
                after=cursor,
            )
            if not reading_new:  # the pending list is walked once, then new entries
                cursor = deliveries[-1].id if deliveries else READING_NEW
            for delivery in deliveries:
                try:
                    await self.handle(delivery)
                except Exception:  # one bad event must not stop the bot; it stays pending
                    logger.exception(
                        "could not handle an event; it stays pending until the next start",
                        extra={"event": "bot.handle_failed", "run_id": delivery.event.run_id},
                    )

    async def handle(self, delivery: Delivery) -> None:
        """Route one entry: acknowledge it, hold it as progress, or queue its notice."""
        event = delivery.event
        if not self.watches.is_watched(event.run_id):
            await self._ack([delivery.id])
            return
        snapshot = self._snapshots.setdefault(event.run_id, RunSnapshot(event.run_id))
        snapshot.update(event)
        if isinstance(event, JobProgress | MetricsProgress):
            await self._ack(self.outbox.hold_progress(event.run_id, delivery.id))
            return
        ack_ids = [delivery.id]
        terminal = event.ends_run
        if terminal:  # the final notice replaces the summary the run would have had
            ack_ids += self.outbox.take_progress(event.run_id)
            del self._snapshots[event.run_id]
        embed = event_embed(event, snapshot if terminal else None)
        attachment = None
        if isinstance(event, JobCompleted):
            attachment = await _loss_chart(event.run_id, snapshot)
            if attachment is not None:
                embed.set_image(url=f"attachment://{attachment.filename}")
        await self._queue(Notice(embed, ack_ids, terminal, attachment))

    async def _queue(self, notice: Notice) -> None:
        dropped = self.outbox.add(notice)
        if dropped:
            self.dropped += len(dropped)
            logger.warning(
                "too many notices waiting; dropped %d older ones",
                len(dropped),
                extra={"event": "bot.notices_dropped"},
            )
            await self._ack(dropped)
        self._wakeup.set()

    # ---- sending ----------------------------------------------------------------------------

    async def deliver(self) -> None:
        message: OutgoingMessage | None = None
        failures = 0
        beat_s = self.config.heartbeat_every_s
        while not self._stopping:
            await self.heartbeat.beat("deliver")
            await self._summarise_when_due()
            message = message or self.outbox.next_message()
            if message is None:
                await self._nap(min(self._next_summary - self._clock(), beat_s))
                continue
            wait_s = self.bucket.wait_s()
            if wait_s > 0:  # a long 429 is waited out in naps, each followed by a heartbeat
                await self._nap(min(wait_s, beat_s))
                continue
            self.bucket.try_take()
            try:
                await self.sender.send(self.recipient, message)
            except DeliveryRateLimited as exc:
                self.rate_limited += 1
                self.bucket.block_for(exc.retry_after_s)
                logger.warning(
                    "Discord rate limit: waiting %.2fs before sending again",
                    exc.retry_after_s,
                    extra={"event": "bot.rate_limited", "status_code": 429},
                )
                continue
            except DiscordUnreachable as exc:  # not the message's fault: keep it, wait, retry
                logger.warning("DM not sent (%s); trying again", exc, extra=_FAILED)
                await self._nap(self.config.failure_backoff_s)
                continue
            except DeliveryFailed as exc:
                failures += 1
                if failures < self.config.max_send_attempts:
                    logger.warning("DM not sent (%s); trying again", exc, extra=_FAILED)
                    await self._nap(self.config.failure_backoff_s)
                    continue
                logger.error("DM dropped after %d attempts: %s", failures, exc, extra=_FAILED)
                self.dropped += len(message.ack_ids)
            else:
                self.sent += 1
            await self._ack(message.ack_ids)
            message, failures = None, 0

    async def _summarise_when_due(self) -> None:
        now = self._clock()
        if now < self._next_summary:
            return
        self._next_summary = now + self.config.summary_every_s
        for run_id in self.outbox.progress_runs():
            embed = summary_embed(self._snapshots[run_id])
            await self._queue(Notice(embed, self.outbox.take_progress(run_id)))

    async def _nap(self, seconds: float) -> None:
        """Sleep up to `seconds`; a new notice or `stop()` ends it early."""
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.0, seconds))

    async def _ack(self, ids: Sequence[str]) -> None:
        await self.bus.ack(self.config.group, ids)


_FAILED = {"event": "bot.dm_failed"}


async def _loss_chart(run_id: str, snapshot: RunSnapshot) -> Attachment | None:
    # matplotlib takes tens of milliseconds per figure: off the event loop
    png = await asyncio.to_thread(loss_chart_png, f"{run_id} · training loss", snapshot.losses)
    return None if png is None else Attachment(f"loss-{run_id}.png", png)
