"""The two live streams as server-sent events: a run's events from the bus
(GET /runs/{id}/events) and its log lines as they are written (GET /runs/{id}/logs/stream).

Both end when the run has ended: the events stream right after the run's terminal event; and
both once the run's status has been terminal for `FINISH_GRACE_S` (a terminal event trimmed
from the stream, or a run that writes no log, must not hold a stream open forever). When the
client goes away, Starlette's StreamingResponse notices and cancels the generator. Both send
a keep-alive comment when quiet, so proxies and the client's read timeout see a live
connection. A failure after the headers ends a stream with a typed `error` message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import redis.asyncio
import redis.exceptions
from starlette.responses import StreamingResponse

from platform_core.api_models import ErrorBody
from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import AsyncEventBus
from platform_core.events import encode_event
from platform_core.layout import DataLayout
from platform_core.run_state import meta_key, status_key
from platform_core.sse import ERROR_EVENT, KEEP_ALIVE, format_sse
from trainer_api.live_state import STATUSES
from trainer_api.log_files import read_lines

KEEP_ALIVE_S = 15.0  # well under the client's 60 s read timeout and common proxy idle limits
FINISH_GRACE_S = 2.0  # the worker publishes its terminal event right after the status
LOG_POLL_S = 0.25  # how often a followed log file is read for new lines
_READ_COUNT = 500  # entries per XREAD: catching up on a busy stream takes few round trips
_log = logging.getLogger(__name__)


@dataclass
class _Pace:
    """When to send a keep-alive, and when a finished run's stream may end."""

    quiet_since: float
    finished_since: float | None = None

    def sent(self) -> None:
        self.quiet_since = time.monotonic()

    def keep_alive_due(self) -> bool:
        if time.monotonic() - self.quiet_since < KEEP_ALIVE_S:
            return False
        self.sent()
        return True

    async def finished(self, client: redis.asyncio.Redis, run_id: str) -> bool:
        raw = await client.get(status_key(run_id))
        status = STATUSES.get(raw.decode()) if isinstance(raw, bytes) else None
        if status is not None and not status.is_terminal:
            self.finished_since = None
            return False
        # a run that Redis no longer knows (only its folder does) has nothing live either
        now = time.monotonic()
        if self.finished_since is None:
            self.finished_since = now
        return now - self.finished_since >= FINISH_GRACE_S


async def follow_events(
    bus: AsyncEventBus,
    run_id: str,
    after_id: str,
    *,
    block_ms: int,
) -> AsyncIterator[bytes]:
    pace = _Pace(time.monotonic())
    cursor = after_id
    while True:
        page = await bus.read_page(cursor, count=_READ_COUNT, block_ms=block_ms)
        caught_up = page.next_id == cursor  # nothing new within block_ms
        cursor = page.next_id
        mine = [d for d in page.deliveries if d.event.run_id == run_id]
        for delivery in mine:
            data = encode_event(delivery.event).decode("utf-8")
            yield format_sse(data, event=delivery.event.type, id=delivery.id)
            if delivery.event.ends_run:
                return
        if mine:
            pace.sent()
        elif caught_up and await pace.finished(bus.client, run_id):
            return
        elif pace.keep_alive_due():
            yield KEEP_ALIVE


async def follow_log(
    client: redis.asyncio.Redis, run_id: str, path: Path, offset: int
) -> AsyncIterator[bytes]:
    pace = _Pace(time.monotonic())
    while True:
        found, offset = await anyio.to_thread.run_sync(read_lines, path, offset)
        for end, line in found:
            yield format_sse(line.model_dump_json(), event="log", id=str(end))
        if found:
            pace.sent()
            continue  # there may be more right away
        if await pace.finished(client, run_id):
            return
        if pace.keep_alive_due():
            yield KEEP_ALIVE
        await anyio.sleep(LOG_POLL_S)


async def require_run(client: redis.asyncio.Redis, data_root: Path, run_id: str) -> None:
    """NOT_FOUND unless Redis or the data root knows the run (run_views.run_exists, async)."""
    if await client.exists(status_key(run_id)):
        return
    if not DataLayout(data_root).run_manifest(run_id).is_file():
        raise AppError(ErrorCode.NOT_FOUND, f"run {run_id} does not exist")


def sse_response(stream: AsyncIterator[bytes], request_id: str | None) -> StreamingResponse:
    # no-cache and no proxy buffering: each event must reach the client as it happens
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _ends_typed(stream, request_id), media_type="text/event-stream", headers=headers
    )


async def _ends_typed(stream: AsyncIterator[bytes], request_id: str | None) -> AsyncIterator[bytes]:
    """After the 200 the status can no longer say that something failed: a failure ends the
    stream with an `error` message holding the usual `{code, message, request_id}`."""
    try:
        async for chunk in stream:
            yield chunk
    except Exception as exc:
        error = _as_app_error(exc)
        _log.log(
            logging.WARNING if isinstance(exc, AppError) else logging.ERROR,
            "stream ended by an error: %s",
            error.message,
            exc_info=not isinstance(exc, AppError),
            extra={
                "event": "api.stream_failed",
                "error_code": error.code.value,
                "request_id": request_id,
            },
        )
        body = ErrorBody(code=error.code.value, message=error.message, request_id=request_id)
        yield format_sse(body.model_dump_json(), event=ERROR_EVENT, id=None)


def _as_app_error(exc: Exception) -> AppError:
    if isinstance(exc, AppError):
        return exc
    if isinstance(exc, redis.exceptions.RedisError):
        return AppError(
            ErrorCode.REDIS_UNAVAILABLE, f"the event store failed ({type(exc).__name__})"
        )
    return AppError(ErrorCode.INTERNAL, f"the stream failed ({type(exc).__name__})")


async def first_event_id(client: redis.asyncio.Redis, run_id: str) -> str:
    """Where a run's events start in the stream: stream ids are Redis' clock in ms, so a
    minute before the run was created (clock skew between hosts) skips every older entry."""
    created = await client.hget(meta_key(run_id), "created_at")
    try:
        created_ms = int(float(created) * 1000) if created is not None else 0
    except ValueError:
        created_ms = 0
    return f"{max(0, created_ms - 60_000)}-0"
