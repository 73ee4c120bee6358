"""The notifier: events of watched runs, from the bus to the owner's DM.

What the owner sees per run, the way CI bots do it:

- every run submitted for the owner (its `queued` event names the owner's id, as `/train` and
  `trainctl submit --user-id` do) is watched from that event on; others through `/watch`;
- a new message only for what needs attention: queued, started, failed, cancelled, completed
  (with the chart of the whole run), a study's milestones (its end with its optimisation
  history and parameter importances), and a new best eval when `notify_best_eval` asks for it;
- one live status message (progress bar, step, loss, eval loss, ETA, tokens/s, last
  checkpoint) that progress, evals and checkpoints edit in place, at most every
  `live_every_s` per run, and once more when the run ends.

Two loops share the outbox:

- `consume` reads the bus through the bot's consumer group: first the entries it was given
  before a restart and never acknowledged, then new ones. Events of unwatched runs are
  acknowledged at once; the others become notices or are folded into their run's live message.
- `deliver` sends notices (a backlog packed into digests of up to 10 embeds) and due live
  edits, paced by `rate_limit.Pacer` (Discord's 5 per 5 s per DM channel, sends and edits
  together; a global budget under 50/s), and acknowledges entries only once the message that
  carries them reached Discord. A 429 empties the pacer until its `retry_after` ends; an
  outage is retried on a capped, jittered exponential back-off that no new event shortens;
  a message Discord refuses outright (a 4xx) is dropped after `max_send_attempts`.

So a restart loses nothing: whatever had not reached Discord is still pending in the group,
the pacer's last send times and each live message's id are in Redis.

Each loop stamps the bot's heartbeat (see `heartbeat`) as it goes round; the delivery loop
never naps longer than `heartbeat_every_s`, so a quiet bot still shows that it is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from platform_core.event_bus import AsyncEventBus, Delivery
from platform_core.events import (
    Event,
    JobCompleted,
    JobFailed,
    JobQueued,
    JobStarted,
    MetricsEval,
    StudyCompleted,
    StudyStarted,
    StudyTrialCompleted,
)
from trainer_bot.embeds import event_embed, live_embed
from trainer_bot.heartbeat import Heartbeat, always_connected
from trainer_bot.live_store import LiveStore
from trainer_bot.outbox import Attachment, Notice, Outbox, OutgoingMessage
from trainer_bot.rate_limit import DM_LIMIT, DM_WINDOW_S, GLOBAL_LIMIT, Pacer, PacingStore
from trainer_bot.registry import owner_notice
from trainer_bot.run_tracker import RunSnapshot
from trainer_bot.senders import DeliveryFailed, DeliveryRateLimited, DiscordUnreachable, Sender
from trainer_bot.watch_store import WatchStore

logger = logging.getLogger(__name__)

READING_PENDING = "0"  # XREADGROUP from "0": what this consumer was given and never acked
READING_NEW = ">"
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
REDIS_RETRY_FIRST_S = 1.0
REDIS_RETRY_MAX_S = 30.0

ChartSource = Callable[[str], Awaitable[bytes | None]]  # run id -> the run's chart PNG
PlotSource = Callable[[str], Awaitable[list[Attachment]]]  # study id -> its plots drawn
# events that get a message of their own (terminal ones are decided by `ends_run`)
ATTENTION = (JobQueued, JobStarted, JobFailed, StudyStarted, StudyTrialCompleted, StudyCompleted)


@dataclass(frozen=True)
class NotifierConfig:
    group: str = "discord-bot"  # the bot's consumer group on the event stream
    consumer: str = "bot"  # one bot process per token, so one consumer name
    live_every_s: float = 10.0  # a run's live message is edited at most this often
    notify_best_eval: bool = False  # a new best eval loss gets a message of its own
    dm_limit: int = DM_LIMIT  # Discord: 5 messages (sends + edits) ...
    dm_window_s: float = DM_WINDOW_S  # ... per 5 s per DM channel
    global_limit: int = GLOBAL_LIMIT  # requests per second in all, under Discord's 50
    read_count: int = 100  # entries per XREADGROUP
    block_ms: int = 1_000  # longest wait for new entries; also how fast `stop()` is noticed
    max_notices: int = 100  # waiting notices beyond this drop the oldest non-terminal one
    max_send_attempts: int = 3  # a message Discord refuses (4xx, not 429) this often is dropped
    backoff_s: float = 5.0  # first wait after an outage or a refusal; doubles each time ...
    backoff_max_s: float = 300.0  # ... up to this
    backoff_jitter: float = 0.2  # each wait is stretched by up to this fraction, at random
    heartbeat_every_s: float = 10.0  # well inside the health check's MAX_AGE_S (120 s)


@dataclass
class LiveRun:
    """A watched run's live message: its figures, its id once sent, and the entries its next
    send or edit carries (acknowledged once Discord took it)."""

    snapshot: RunSnapshot
    message_id: int | None = None
    ack_ids: list[str] = field(default_factory=list)
    dirty: bool = False  # figures changed since the last send or edit
    due_at: float = 0.0  # not edited again before this (the notifier's clock)
    final: bool = False  # the run ended: one last edit, then forgotten


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
        charts: ChartSource | None = None,
        plots: PlotSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.watches = watches
        self.sender = sender
        self.recipient = recipient
        self.config = config or NotifierConfig()
        self.outbox = Outbox(self.config.max_notices)
        self.charts = charts
        self.plots = plots
        self._clock = clock
        self.pacer = self._new_pacer(())
        self.pacing = PacingStore(bus.client, recipient)
        self.live_store = LiveStore(bus.client)
        self.heartbeat = Heartbeat(bus.client, self.config.heartbeat_every_s, connected)
        self.live: dict[str, LiveRun] = {}
        self._ended: set[str] = set()  # runs that ended while this process watched them
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._cursor = READING_PENDING  # where consume() goes on after a Redis outage
        self._retry_at = 0.0  # back-off: nothing is sent before this
        self._outages = 0  # failures in a row, for the back-off's doubling
        self._refusals = 0  # 4xx answers to the message being tried
        # counters, for logs, tests and the benchmark
        self.sent = 0  # messages Discord accepted (sends and edits)
        self.edits = 0  # of which edits of a live message
        self.rate_limited = 0  # 429s waited out (each message was then sent again)
        self.dropped = 0  # entries acknowledged without being sent (overflow, refusals)
        self.attempts = 0  # requests made to Discord, answered or not

    def _new_pacer(self, sent: Sequence[float]) -> Pacer:
        config = self.config
        return Pacer(
            limit=config.dm_limit,
            window_s=config.dm_window_s,
            global_limit=config.global_limit,
            clock=self._clock,
            sent=sent,
        )

    def stop(self) -> None:
        """Ask both loops to finish; entries not yet sent stay pending for the next start."""
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        """Restore the watches, the pacing and the live messages, then consume and deliver
        until `stop()`."""
        watching = await self.watches.restore()
        self.pacer = self._new_pacer(await self.pacing.load())
        for run_id, (message_id, snapshot) in (await self.live_store.load()).items():
            self.live[run_id] = LiveRun(snapshot, message_id)
        logger.info(
            "notifier started; watching %d runs", len(watching), extra={"event": "bot.started"}
        )
        await self.bus.ensure_group(self.config.group, start_id="0")
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._through_redis_outages(self.consume, "reading events"))
            tasks.create_task(self._through_redis_outages(self.deliver, "sending"))

    async def _through_redis_outages(self, loop: Callable[[], Awaitable[None]], what: str) -> None:
        """Run `loop`; while Redis does not answer, wait (doubling, capped) and run it again,
        so a Redis restart pauses the bot instead of ending it. Nothing is lost: an entry is
        acknowledged only after its message went out, and unacknowledged ones stay pending."""
        delay = REDIS_RETRY_FIRST_S
        while not self._stopping:
            try:
                await loop()
                return
            except REDIS_DOWN as exc:
                logger.warning(
                    "Redis does not answer (%s); %s again in %.0f s",
                    type(exc).__name__,
                    what,
                    delay,
                    extra={"event": "bot.redis_down"},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, REDIS_RETRY_MAX_S)

    # ---- reading the bus --------------------------------------------------------------------

    async def consume(self) -> None:
        while not self._stopping:
            await self.heartbeat.beat("consume")
            cursor = self._cursor
            reading_new = cursor == READING_NEW
            deliveries = await self.bus.consume(
                self.config.group,
                self.config.consumer,
                count=self.config.read_count,
                block_ms=self.config.block_ms if reading_new else None,
                after=cursor,
            )
            if not reading_new:  # the pending list is walked once, then new entries
                self._cursor = deliveries[-1].id if deliveries else READING_NEW
            for delivery in deliveries:
                try:
                    await self.handle(delivery)
                except Exception:  # one bad event must not stop the bot; it stays pending
                    logger.exception(
                        "could not handle an event; it stays pending until the next start",
                        extra={"event": "bot.handle_failed", "run_id": delivery.event.run_id},
                    )

    async def handle(self, delivery: Delivery) -> None:
        """Route one entry: acknowledge it, fold it into the live message, or queue its
        notice."""
        event = delivery.event
        if isinstance(event, JobQueued) and event.user_id == self.recipient:
            # submitted for the owner (`trainctl submit --user-id`, the API): watched from its
            # first event on, as `/train` does
            await self.watches.watch(event.run_id)
        if (owner_embed := owner_notice(event)) is not None:  # whether watched or not
            await self._queue(Notice(owner_embed, [delivery.id]))
            return
        if not self.watches.is_watched(event.run_id, delivery.id):
            await self._ack([delivery.id])  # unwatched, or shown by /watch's catch-up
            return
        if event.run_id in self._ended and not isinstance(event, ATTENTION):
            await self._ack([delivery.id])  # a straggler after the end: nothing to update
            return
        live = self.live.get(event.run_id)
        if live is None:
            live = self.live[event.run_id] = LiveRun(RunSnapshot(event.run_id))
        new_best = live.snapshot.update(event)
        if event.ends_run:
            await self._end(live, event, delivery.id)
        elif isinstance(event, StudyTrialCompleted) and not event.payload.is_best:
            await self._ack([delivery.id])  # a DM for each new best trial, not every trial
        elif isinstance(event, ATTENTION):
            await self._queue(Notice(event_embed(event), [delivery.id]))
        elif isinstance(event, MetricsEval) and new_best and self.config.notify_best_eval:
            await self._queue(Notice(event_embed(event), [delivery.id]))
            live.dirty = True
        else:  # progress, config, evals, checkpoints, metrics summaries: the live message
            live.ack_ids.append(delivery.id)
            live.dirty = True
            self._wakeup.set()

    async def _end(self, live: LiveRun, event: Event, delivery_id: str) -> None:
        """The run ended: its notice (with the chart of a completed run, a study's plots),
        and a last edit of its live message, or, when it never had one, the folded entries
        ride the notice."""
        ack_ids = [delivery_id]
        self._ended.add(event.run_id)
        if live.message_id is None:
            ack_ids += live.ack_ids
            del self.live[event.run_id]
        else:
            live.final, live.dirty, live.due_at = True, True, 0.0
        embed = event_embed(event, live.snapshot)
        attachments = await self._pictures(event)
        if attachments:  # the first shown in the embed, the others below it
            embed.set_image(url=f"attachment://{attachments[0].filename}")
        await self._queue(Notice(embed, ack_ids, terminal=True, attachments=tuple(attachments)))

    async def _pictures(self, event: Event) -> list[Attachment]:
        """A completed run's chart, a finished study's plots, from the API."""
        try:
            if isinstance(event, JobCompleted) and self.charts is not None:
                png = await self.charts(event.run_id)
                return [] if png is None else [Attachment(f"chart-{event.run_id}.png", png)]
            if isinstance(event, StudyCompleted) and self.plots is not None:
                return await self.plots(event.run_id)
        except Exception:  # a picture is a bonus: the completion goes out without it
            logger.warning(
                "no chart for the completion", exc_info=True, extra={"event": "bot.no_chart"}
            )
        return []

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
        message: OutgoingMessage | None = None  # a notice message being tried
        beat_s = self.config.heartbeat_every_s
        while not self._stopping:
            await self.heartbeat.beat("deliver")
            now = self._clock()
            if now < self._retry_at:  # backing off: new events do not shorten it
                await self._nap(min(self._retry_at - now, beat_s))
                continue
            message = message or self.outbox.next_message()
            live = None if message is not None else self._due_live(now)
            if message is None and live is None:
                await self._nap(min(self._next_live_due(now) - now, beat_s))
                continue
            wait_s = self.pacer.wait_s()
            if wait_s > 0:  # a long 429 is waited out in naps, each followed by a heartbeat
                await self._nap(min(wait_s, beat_s))
                continue
            if await self._attempt(message, live):
                message = None

    async def _attempt(self, message: OutgoingMessage | None, live: LiveRun | None) -> bool:
        """Send `message` (or `live`'s update) once; True when it is done with (sent, or
        dropped after `max_send_attempts` refusals), False when it must be tried again."""
        self.pacer.take()
        self.attempts += 1
        try:
            if message is not None:
                await self.sender.send(self.recipient, message)
                ack_ids = message.ack_ids
            else:
                assert live is not None
                ack_ids = await self._send_live(live)
        except DeliveryRateLimited as exc:
            self.rate_limited += 1
            self.pacer.block_for(exc.retry_after_s)
            logger.warning(
                "Discord rate limit: waiting %.2fs before sending again",
                exc.retry_after_s,
                extra={"event": "bot.rate_limited", "status_code": 429},
            )
            await self._save_pacing()
            return False
        except DiscordUnreachable as exc:  # not the message's fault: keep it, wait, retry
            self.pacer.answered()  # it may have reached Discord all the same
            self._back_off(f"DM not sent ({exc}); trying again")
            await self._save_pacing()
            return False
        except DeliveryFailed as exc:
            self.pacer.answered()
            self._refusals += 1
            if live is not None:  # e.g. the live message was deleted: post a new one
                live.message_id = None
            if self._refusals < self.config.max_send_attempts:
                self._back_off(f"DM not sent ({exc}); trying again")
                await self._save_pacing()
                return False
            logger.error("DM dropped after %d attempts: %s", self._refusals, exc, extra=_FAILED)
            ack_ids = message.ack_ids if message is not None else self._drop_live(live)
            self.dropped += len(ack_ids)
        else:
            self.pacer.answered()
            self.sent += 1
        self._outages = self._refusals = 0
        await self._save_pacing()
        await self._ack(ack_ids)
        return True

    def _due_live(self, now: float) -> LiveRun | None:
        """The live message most overdue for its send or edit; None when none is due."""
        due = [live for live in self.live.values() if live.dirty and live.due_at <= now]
        return min(due, key=lambda live: live.due_at, default=None)

    def _next_live_due(self, now: float) -> float:
        dirty = [live.due_at for live in self.live.values() if live.dirty]
        return max(now, min(dirty, default=now + self.config.heartbeat_every_s))

    async def _send_live(self, live: LiveRun) -> list[str]:
        """Send or edit `live`'s message with its latest figures; answers the entries it
        carried."""
        snapshot = live.snapshot
        message = OutgoingMessage([live_embed(snapshot)], live=True)
        carried, live.ack_ids = live.ack_ids, []
        try:
            if live.message_id is None:
                live.message_id = await self.sender.send(self.recipient, message)
            else:
                await self.sender.edit(self.recipient, live.message_id, message)
                self.edits += 1
        except BaseException:
            live.ack_ids = carried + live.ack_ids  # not sent: they wait for the next try
            raise
        live.dirty = False
        live.due_at = self._clock() + self.config.live_every_s
        if live.final:
            self.live.pop(snapshot.run_id, None)
            await self.live_store.forget(snapshot.run_id)
        else:
            await self.live_store.save(live.message_id, snapshot)
        return carried

    def _drop_live(self, live: LiveRun | None) -> list[str]:
        assert live is not None
        dropped, live.ack_ids, live.dirty = live.ack_ids, [], False
        if live.final:
            self.live.pop(live.snapshot.run_id, None)
        return dropped

    def _back_off(self, reason: str) -> None:
        """Wait before the next try: `backoff_s` doubled per failure in a row, capped, with
        jitter so that many bots do not come back at the same instant."""
        config = self.config
        self._outages += 1
        delay = min(config.backoff_max_s, config.backoff_s * 2 ** (self._outages - 1))
        delay *= 1 + config.backoff_jitter * random.random()  # noqa: S311 - jitter, not secrets
        self._retry_at = self._clock() + delay
        logger.warning("%s in %.1fs", reason, delay, extra=_FAILED)

    async def _save_pacing(self) -> None:
        times = self.pacer.channel.times
        ttl_s = max([*times, self._clock()]) - self._clock() + self.config.dm_window_s
        await self.pacing.save(times, ttl_s)

    async def _nap(self, seconds: float) -> None:
        """Sleep up to `seconds`; a new notice or `stop()` ends it early."""
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.0, seconds))

    async def _ack(self, ids: Sequence[str]) -> None:
        if ids:
            await self.bus.ack(self.config.group, ids)


_FAILED = {"event": "bot.dm_failed"}
