"""A run's events, live, as server-sent events from the event bus."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from trainer_api.deps import AsyncEventBusDep, DataRootDep, RunIdPath, SettingsDep
from trainer_api.errors import error_responses, request_id_of
from trainer_api.routes.logs import sse_openapi
from trainer_api.streams import first_event_id, follow_events, require_run, sse_response

router = APIRouter(prefix="/runs", tags=["events"], responses=error_responses(401))
# a Redis stream id, `<ms>-<seq>` or just `<ms>` (= `<ms>-0`, as Redis reads it); 19 digits
# keep each part under 2**64, the most Redis reads (a 20-digit id matched the pattern but
# failed at Redis after the 200)
STREAM_ID = r"^[0-9]{1,19}(?:-[0-9]{1,19})?$"
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
