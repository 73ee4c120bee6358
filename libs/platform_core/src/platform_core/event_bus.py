"""The event bus: one Redis Stream (`trainer:events`), capped with `MAXLEN ~`.

Producers `publish`. Readers either `read` from a stream id (the API's SSE maps it to
`Last-Event-ID`) or consume through a consumer group and `ack` after handling (the bot), so a
restarted consumer first re-reads what it was given but never acknowledged, then new entries:
nothing is lost and nothing acknowledged is handled twice. Entries that do not decode are
logged, copied to `<stream>:dead` and acknowledged; they never stop a consumer.

`EventBus` is the sync API (worker); `AsyncEventBus` the asyncio one (API, bot). Both share the
pure helpers below, so they differ only in `await`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import redis
import redis.asyncio
from redis.typing import EncodableT, FieldT

from platform_core.events import Event, EventDecodeError, decode_event, encode_event
from platform_core.settings import RedisSettings

STREAM = "trainer:events"
DEFAULT_MAXLEN = 100_000
_DATA = b"data"
_TYPE = b"type"
_log = logging.getLogger(__name__)

# Redis answers XREAD/XREADGROUP with [[stream, [(id, {field: value}), ...]], ...] and XAUTOCLAIM
# with [next_id, [(id, fields), ...], deleted_ids]; redis-py leaves these untyped.
_Fields = dict[bytes, bytes]
_RawEntry = tuple[bytes, _Fields]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One decoded entry of the stream."""

    id: str
    event: Event


@dataclass(frozen=True, slots=True)
class Page:
    """What one read returned, and where the next read starts."""

    deliveries: list[Delivery]
    next_id: str  # the last entry read (decodable or not), or the id read after when none


@dataclass(frozen=True, slots=True)
class _Batch:
    deliveries: list[Delivery]
    undecodable: list[tuple[str, bytes]]  # (stream id, raw data) of entries that did not decode
    trimmed: list[str]  # pending entries whose data MAXLEN already trimmed away


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _fields(event: Event) -> dict[FieldT, EncodableT]:
    return {_TYPE: event.type.encode("ascii"), _DATA: encode_event(event)}


_RawStream = list[tuple[object, dict[object, object]]]


def _entries(raw_entries: _RawStream) -> list[_RawEntry]:
    # An entry trimmed by MAXLEN while still pending comes back with no fields: kept, empty.
    return [
        (_as_bytes(entry_id), {_as_bytes(k): _as_bytes(v) for k, v in fields.items()})
        for entry_id, fields in raw_entries
    ]


def _stream_entries(response: object) -> list[_RawEntry]:
    """Flatten an XREAD / XREADGROUP answer for a single stream (empty on a timeout)."""
    if isinstance(response, dict):  # RESP3 (redis-py): {stream: [entries]}
        streams = [raw for value in response.values() for raw in value]
    elif isinstance(response, list):  # RESP2: [[stream, entries], ...]
        streams = [raw for _stream, raw in response]
    else:  # pragma: no cover - redis-py answers XREAD with a list (RESP2) or a dict (RESP3)
        raise TypeError(f"unexpected XREAD answer: {type(response).__name__}")
    return [e for raw in streams for e in _entries(raw)]


def _dead_fields(stream_id: str, data: bytes) -> dict[FieldT, EncodableT]:
    return {b"id": stream_id.encode("ascii"), _DATA: data}


def _decode(entries: list[_RawEntry]) -> _Batch:
    batch = _Batch([], [], [])
    for entry_id, fields in entries:
        stream_id = entry_id.decode("ascii")
        if not fields:
            batch.trimmed.append(stream_id)
            continue
        data = fields.get(_DATA, b"")
        try:
            batch.deliveries.append(Delivery(stream_id, decode_event(data)))
        except EventDecodeError as exc:
            _log.warning(
                "skipping undecodable event: %s",
                exc.message,
                extra={"event": "event_bus.undecodable", "error_code": exc.code.value},
            )
            batch.undecodable.append((stream_id, data))
    return batch


class EventBus:
    """Synchronous bus for the worker and scripts. `client` must not decode responses."""

    def __init__(
        self, client: redis.Redis, *, stream: str = STREAM, maxlen: int = DEFAULT_MAXLEN
    ) -> None:
        self.client = client
        self.stream = stream
        self.maxlen = maxlen

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: RedisSettings) -> EventBus:
        """The bus on the configured stream and cap (`APP__REDIS__EVENTS_STREAM`, `..._MAXLEN`)."""
        return cls(client, stream=settings.events_stream, maxlen=settings.events_maxlen)

    def publish(self, event: Event) -> str:
        entry_id = self.client.xadd(
            self.stream, _fields(event), maxlen=self.maxlen, approximate=True
        )
        return _as_bytes(entry_id).decode("ascii")

    def last_id(self) -> str:
        """The id of the newest entry ("0-0" for an empty stream): read after it to see only
        what is published from now on."""
        newest = self.client.xrevrange(self.stream, count=1)
        return _as_bytes(newest[0][0]).decode("ascii") if newest else "0-0"

    def read(
        self, after_id: str = "0-0", *, count: int = 100, block_ms: int | None = None
    ) -> list[Delivery]:
        """Entries after `after_id` (exclusive); blocks up to `block_ms` when there are none."""
        response = self.client.xread({self.stream: after_id}, count=count, block=block_ms)
        return _decode(_stream_entries(response)).deliveries

    def ensure_group(self, group: str, *, start_id: str = "$") -> None:
        try:
            self.client.xgroup_create(self.stream, group, id=start_id, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def consume(
        self,
        group: str,
        consumer: str,
        *,
        count: int = 100,
        block_ms: int | None = None,
        after: str = ">",
    ) -> list[Delivery]:
        """New entries for `consumer` (`after=">"`), or, given a stream id, the entries it was
        delivered earlier and has not acknowledged, after that id (its pending list)."""
        response = self.client.xreadgroup(
            group, consumer, {self.stream: after}, count=count, block=block_ms
        )
        batch = _decode(_stream_entries(response))
        self._bury(group, batch.undecodable)
        self.ack(group, batch.trimmed)  # nothing left to handle
        return batch.deliveries

    def claim_stale(self, group: str, consumer: str, *, min_idle_ms: int, count: int = 100) -> int:
        """Take over entries another (dead) consumer left unacknowledged for `min_idle_ms`;
        they then come back through `consume(..., after="0")`. Returns how many."""
        claimed = 0
        cursor = "0-0"
        while True:
            reply = self.client.xautoclaim(
                self.stream, group, consumer, min_idle_ms, start_id=cursor, count=count
            )
            cursor = _as_bytes(reply[0]).decode("ascii")
            claimed += len(reply[1])
            if cursor == "0-0":
                return claimed

    def ack(self, group: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return int(self.client.xack(self.stream, group, *ids))

    def _bury(self, group: str, undecodable: list[tuple[str, bytes]]) -> None:
        for stream_id, data in undecodable:
            self.client.xadd(
                f"{self.stream}:dead",
                _dead_fields(stream_id, data),
                maxlen=self.maxlen,
                approximate=True,
            )
            self.client.xack(self.stream, group, stream_id)

    def run_consumer(
        self,
        group: str,
        consumer: str,
        handler: Callable[[Event], None],
        *,
        should_stop: Callable[[], bool],
        block_ms: int = 1_000,
        claim_idle_ms: int = 60_000,
    ) -> int:
        """Handle events until `should_stop()`; ack each after its handler returns. A handler
        that raises is logged and its entry stays pending (redelivered after a restart).
        Returns the number of events handled."""
        self.ensure_group(group, start_id="0")
        self.claim_stale(group, consumer, min_idle_ms=claim_idle_ms)
        handled = 0
        cursor = "0"  # first walk what this consumer was given before a crash, then ">"
        while not should_stop():
            deliveries = self.consume(
                group, consumer, block_ms=_block(cursor, block_ms), after=cursor
            )
            cursor = _next_cursor(cursor, deliveries)
            for delivery in deliveries:
                if _handle(handler, delivery):
                    self.ack(group, [delivery.id])
                    handled += 1
        return handled


def _block(cursor: str, block_ms: int) -> int | None:
    # Reading the pending list must not block: an empty answer means it is drained.
    return block_ms if cursor == ">" else None


def _next_cursor(cursor: str, deliveries: list[Delivery]) -> str:
    if cursor == ">":
        return cursor
    return deliveries[-1].id if deliveries else ">"


def _handle(handler: Callable[[Event], None], delivery: Delivery) -> bool:
    try:
        handler(delivery.event)
    except Exception:  # one failing handler must not stop the consumer
        _log_handler_failure(delivery)
        return False
    return True


def _log_handler_failure(delivery: Delivery) -> None:
    _log.exception(
        "event handler failed; entry stays pending until the consumer restarts",
        extra={"event": "event_bus.handler_failed", "run_id": delivery.event.run_id},
    )


class AsyncEventBus:
    """asyncio bus for the API and the bot. `client` must not decode responses."""

    def __init__(
        self, client: redis.asyncio.Redis, *, stream: str = STREAM, maxlen: int = DEFAULT_MAXLEN
    ) -> None:
        self.client = client
        self.stream = stream
        self.maxlen = maxlen

    @classmethod
    def from_settings(cls, client: redis.asyncio.Redis, settings: RedisSettings) -> AsyncEventBus:
        """The bus on the configured stream and cap (`APP__REDIS__EVENTS_STREAM`, `..._MAXLEN`)."""
        return cls(client, stream=settings.events_stream, maxlen=settings.events_maxlen)

    async def publish(self, event: Event) -> str:
        entry_id = await self.client.xadd(
            self.stream, _fields(event), maxlen=self.maxlen, approximate=True
        )
        return _as_bytes(entry_id).decode("ascii")

    async def read(
        self, after_id: str = "0-0", *, count: int = 100, block_ms: int | None = None
    ) -> list[Delivery]:
        return (await self.read_page(after_id, count=count, block_ms=block_ms)).deliveries

    async def read_page(
        self, after_id: str = "0-0", *, count: int = 100, block_ms: int | None = None
    ) -> Page:
        """Like `read`, with the id to read after next: past undecodable entries too, so a
        follower never re-reads (and spins on) an entry it cannot decode."""
        response = await self.client.xread({self.stream: after_id}, count=count, block=block_ms)
        entries = _stream_entries(response)
        next_id = entries[-1][0].decode("ascii") if entries else after_id
        return Page(_decode(entries).deliveries, next_id)

    async def read_back(self, newest: str = "+", oldest: str = "-", *, count: int = 100) -> Page:
        """Up to `count` entries from `newest` back to `oldest` (inclusive ids, or exclusive
        with a leading "("), newest first; `next_id` is the oldest entry read (`newest` when
        none), so the next page starts at `"(" + next_id`."""
        raw = await self.client.xrevrange(self.stream, newest, oldest, count=count)
        rows: _RawStream = [
            (entry_id, {key: value for key, value in (fields or {}).items()})
            for entry_id, fields in raw or []
        ]
        entries = _entries(rows)
        next_id = entries[-1][0].decode("ascii") if entries else newest
        return Page(_decode(entries).deliveries, next_id)

    async def ensure_group(self, group: str, *, start_id: str = "$") -> None:
        try:
            await self.client.xgroup_create(self.stream, group, id=start_id, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def consume(
        self,
        group: str,
        consumer: str,
        *,
        count: int = 100,
        block_ms: int | None = None,
        after: str = ">",
    ) -> list[Delivery]:
        response = await self.client.xreadgroup(
            group, consumer, {self.stream: after}, count=count, block=block_ms
        )
        batch = _decode(_stream_entries(response))
        for stream_id, data in batch.undecodable:
            await self.client.xadd(
                f"{self.stream}:dead",
                _dead_fields(stream_id, data),
                maxlen=self.maxlen,
                approximate=True,
            )
            await self.client.xack(self.stream, group, stream_id)
        await self.ack(group, batch.trimmed)  # nothing left to handle
        return batch.deliveries

    async def ack(self, group: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return int(await self.client.xack(self.stream, group, *ids))

    async def run_consumer(
        self,
        group: str,
        consumer: str,
        handler: Callable[[Event], Awaitable[None]],
        *,
        should_stop: Callable[[], bool],
        block_ms: int = 1_000,
    ) -> int:
        """The asyncio twin of EventBus.run_consumer (no stale-claiming: one bot instance)."""
        await self.ensure_group(group, start_id="0")
        handled = 0
        cursor = "0"
        while not should_stop():
            deliveries = await self.consume(
                group, consumer, block_ms=_block(cursor, block_ms), after=cursor
            )
            cursor = _next_cursor(cursor, deliveries)
            for delivery in deliveries:
                try:
                    await handler(delivery.event)
                except Exception:  # one failing handler must not stop the consumer
                    _log_handler_failure(delivery)
                    continue
                await self.ack(group, [delivery.id])
                handled += 1
        return handled
