"""A run's events, live, as server-sent events from the event bus."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from platform_core.api_models import RecentEvent, RecentEvents
from platform_core.event_bus import AsyncEventBus
from trainer_api.deps import AsyncEventBusDep, DataRootDep, RunIdPath, SettingsDep
from trainer_api.errors import error_responses, request_id_of
from trainer_api.routes.logs import sse_openapi
from trainer_api.streams import first_event_id, follow_events, require_run, sse_response

router = APIRouter(prefix="/runs", tags=["events"], responses=error_responses(401))
# a Redis stream id, `<ms>-<seq>` or just `<ms>` (= `<ms>-0`, as Redis reads it); 19 digits
# keep each part under 2**64, the most Redis reads (a 20-digit id matched the pattern but
# failed at Redis after the 200)
STREAM_ID = r"^[0-9]{1,19}(?:-[0-9]{1,19})?$"
EVENT_TYPE = r"trainer\.[a-z_.]{1,40}\.v[0-9]{1,3}"
EVENT_TYPES = rf"^{EVENT_TYPE}(,{EVENT_TYPE}){{0,15}}$"  # comma-separated, up to 16
RECENT_MAX = 50  # events a catch-up shows at most: a DM or a terminal screen, not a history
# entries looked back through at most: minutes of a busy stream; older events are the run's
# history (its chart and logs), not a catch-up, and a request stays a few round trips
RECENT_SCAN_MAX = 5_000
_SCAN_PAGE = 500
# each event's data is one platform_core.events event; its type is also the SSE event name
RUN_EVENTS = sse_openapi(
    {"type": "string", "pattern": r"^trainer\.[a-z_.]+\.v[0-9]+$"},
    STREAM_ID,
    {
        "type": "object",
        "required": ["type", "event_id", "run_id", "ts", "payload"],
        "properties": {"type": {"type": "string"}, "run_id": {"type": "string"}},
    },
)


@router.get(
    "/{run_id}/events",
    response_class=StreamingResponse,
    responses={**RUN_EVENTS, **error_responses(404, 422)},
)
async def run_events(
    run_id: RunIdPath,
    request: Request,
    *,
    bus: AsyncEventBusDep,
    data_root: DataRootDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(pattern=STREAM_ID)] = None,
) -> StreamingResponse:
    """The run's events from its start (or after `Last-Event-ID`), then live; each `id:` is
    the event's stream id. Ends after the run's terminal event; an id past the newest event
    waits for newer ones."""
    await require_run(bus.client, data_root, run_id)
    if last_event_id is None:
        start = await first_event_id(bus.client, run_id)
    else:  # a bare `<ms>` is the entry `<ms>-0`: the stream resumes after it
        start = last_event_id if "-" in last_event_id else f"{last_event_id}-0"
    # a blocking read must end well within the client's socket timeout (a timeout is never
    # retried): Redis ends a BLOCK on its cron, up to 100 ms late at its default hz of 10
    block_ms = max(10, min(1_000, int(settings.redis.connect_timeout_s * 500) - 100))
    stream = follow_events(bus, run_id, start, block_ms=block_ms)
    return sse_response(stream, request_id_of(request))


@router.get("/{run_id}/events/recent", responses=error_responses(404, 422))
async def recent_events(
    run_id: RunIdPath,
    *,
    bus: AsyncEventBusDep,
    data_root: DataRootDep,
    limit: Annotated[int, Query(ge=1, le=RECENT_MAX)] = 10,
    types: Annotated[str, Query(pattern=EVENT_TYPES, max_length=1_000)] = "",
) -> RecentEvents:
    """The run's newest `limit` events of `types` (comma-separated event types; every type
    when absent), oldest first, and the stream's newest id when they were read: a watcher's
    catch-up, after which live events start."""
    await require_run(bus.client, data_root, run_id)
    wanted = frozenset(types.split(",")) if types else None
    oldest = await first_event_id(bus.client, run_id)
    found, read_at = await _read_back(bus, run_id, wanted, oldest, limit)
    return RecentEvents(items=found[::-1], read_at=read_at)


async def _read_back(
    bus: AsyncEventBus, run_id: str, wanted: frozenset[str] | None, oldest: str, limit: int
) -> tuple[list[RecentEvent], str]:
    """Newest first: the run's matching events, and the newest id of the stream (the
    scan starts there, so nothing after it is in the answer)."""
    read_at = (await bus.read_back(count=1)).next_id
    if read_at == "+":  # an empty stream
        return [], "0-0"
    found: list[RecentEvent] = []
    newest, scanned = read_at, 0
    while len(found) < limit and scanned < RECENT_SCAN_MAX:
        page = await bus.read_back(newest, oldest, count=_SCAN_PAGE)
        if page.next_id == newest and not page.deliveries:  # nothing older
            break
        scanned += _SCAN_PAGE
        newest = f"({page.next_id}"
        for delivery in page.deliveries:
            event = delivery.event
            if event.run_id == run_id and (wanted is None or event.type in wanted):
                found.append(RecentEvent(id=delivery.id, event=event))
                if len(found) == limit:
                    break
    return found, read_at
