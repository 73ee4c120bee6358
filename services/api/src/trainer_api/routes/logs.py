"""A run's logs: the last lines, or a live stream of them (SSE)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from platform_core.api_models import RunLogs
from platform_core.errors import AppError, ErrorCode
from trainer_api.deps import AsyncRedisDep, DataRootDep, RedisDep, RunIdPath
from trainer_api.errors import OpenApiResponses, error_responses, request_id_of
from trainer_api.log_files import LOG_FILE, MAX_TAIL_LINES, line_start, tail, tail_offset
from trainer_api.run_views import run_exists, run_folder
from trainer_api.streams import follow_log, require_run, sse_response

router = APIRouter(prefix="/runs", tags=["logs"], responses=error_responses(401))


def sse_openapi(
    event: dict[str, object], id_pattern: str, data: dict[str, object]
) -> OpenApiResponses:
    """The OpenAPI entry of a 200 SSE stream: the schema of each event (as OpenAPI 3.2's
    itemSchema), its data a JSON document described by `data`."""
    item = {
        "type": "object",
        "required": ["event", "id", "data"],
        "properties": {
            "event": event,
            "id": {"type": "string", "pattern": id_pattern},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data,
            },
        },
    }
    description = "server-sent events; send the last `id:` back as Last-Event-ID to resume"
    return {200: {"description": description, "content": {"text/event-stream": {"schema": item}}}}


LOG_EVENTS = sse_openapi({"const": "log"}, r"^[0-9]+$", {"$ref": "#/components/schemas/LogLine"})
TailQuery = Annotated[
    int, Query(alias="tail", ge=0, le=MAX_TAIL_LINES, description="how many last lines to send")
]


@router.get("/{run_id}/logs", responses=error_responses(404, 422))
def run_logs(
    run_id: RunIdPath, client: RedisDep, data_root: DataRootDep, tail_lines: TailQuery = 100
) -> RunLogs:
    """The last lines of the run's logs.jsonl, parsed, oldest first."""
    if not run_exists(client, data_root, run_id):
        raise AppError(ErrorCode.NOT_FOUND, f"run {run_id} does not exist")
    lines = tail(run_folder(data_root, run_id) / LOG_FILE, tail_lines)
    return RunLogs(run_id=run_id, lines=lines)


@router.get(
    "/{run_id}/logs/stream",
    response_class=StreamingResponse,
    responses={**LOG_EVENTS, **error_responses(404, 422)},
)
async def stream_logs(
    run_id: RunIdPath,
    request: Request,
    *,
    client: AsyncRedisDep,
    data_root: DataRootDep,
    tail_lines: TailQuery = 100,
    last_event_id: Annotated[str | None, Header(pattern=r"^[0-9]{1,18}$")] = None,
) -> StreamingResponse:
    """The last lines, then each new one as the run writes it (SSE, `id:` = byte offset);
    ends when the run has ended. A `Last-Event-ID` past the end waits there for new lines;
    one inside a line resumes at that line's start."""
    await require_run(client, data_root, run_id)
    path = run_folder(data_root, run_id) / LOG_FILE
    if last_event_id:
        offset = line_start(path, int(last_event_id))
    else:
        offset = tail_offset(path, tail_lines)
    return sse_response(follow_log(client, run_id, path, offset), request_id_of(request))
