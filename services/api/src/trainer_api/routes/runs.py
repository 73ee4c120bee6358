"""Runs: start a model run, list runs, describe one, cancel one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from platform_core.api_models import (
    CancelResult,
    JobAccepted,
    RunCreate,
    RunList,
    RunPublic,
    RunQuery,
)
from platform_core.queue import request_cancel
from platform_core.run_state import RunStateStore
from trainer_api.deps import (
    DataRootDep,
    EventBusDep,
    IdempotencyKeyHeader,
    RedisDep,
    RunIdPath,
    SettingsDep,
)
from trainer_api.errors import OpenApiResponses, error_responses
from trainer_api.run_views import list_page, load_run_async
from trainer_api.submissions import submit

router = APIRouter(prefix="/runs", tags=["runs"], responses=error_responses(401))


@router.post(
    "/train",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(404, 409, 413, 422),
)
def train_model(
    body: RunCreate,
    *,
    client: RedisDep,
    data_root: DataRootDep,
    bus: EventBusDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobAccepted:
    """Queue a model run on a trained (or queued) tokenizer; its id is given or `run-<hex>`."""
    bound = settings.training.max_activation_gib
    return submit(client, data_root, body, idempotency_key, bus, max_activation_gib=bound)


# where a listed run's id leads: OpenAPI links, so a client (and schemathesis) reaches the
# run's chart and artifact with a real id
RUN_LINKS: OpenApiResponses = {
    200: {
        "description": "Successful Response",
        "links": {
            "RunChart": {
                "operationId": "get_run_chart",
                "parameters": {"run_id": "$response.body#/items/0/run_id"},
            },
            "RunArtifact": {
                "operationId": "download_artifact",
                "parameters": {"kind": "runs", "artifact_id": "$response.body#/items/0/run_id"},
            },
        },
    }
}


@router.get("", responses={**RUN_LINKS, **error_responses(422)})
def list_runs(
    query: Annotated[RunQuery, Query()], client: RedisDep, data_root: DataRootDep
) -> RunList:
    """Runs newest first, filtered by status, kind and owner, a page at a time."""
    # one index holds exactly the runs of each combination of filters: the page and its total
    # are one read, whatever the number of runs (platform_core.run_index)
    found = RunStateStore(client).page(
        status=query.status,
        kind=query.kind,
        user_id=query.user_id,
        offset=query.offset,
        limit=query.limit,
    )
    return RunList(
        items=list_page(client, data_root, found.run_ids),
        total=found.total,
        limit=query.limit,
        offset=query.offset,
    )


@router.get("/{run_id}", response_model=RunPublic, responses=error_responses(404, 422))
async def get_run(run_id: RunIdPath, request: Request) -> Response:
    """Status, last heartbeat and its age, progress, ETA, message; metrics once finished."""
    # the most polled endpoint: on the event loop, its Redis read sent with those of other
    # polls (`LiveStateReader`), the app's state read directly rather than through two more
    # dependencies, and the model serialized here (FastAPI would validate it again first)
    state = request.app.state
    run = await load_run_async(state.live_reader, state.data_root, run_id)
    return Response(run.model_dump_json(), media_type="application/json")


@router.post("/{run_id}/cancel", responses=error_responses(404, 409, 422))
def cancel_run(run_id: RunIdPath, client: RedisDep, bus: EventBusDep) -> CancelResult:
    """Cancel a queued run at once, or ask a running one to stop; 409 for a finished run."""
    owner = RunStateStore(client).meta(run_id).get("user_id")  # the cancelled event's DM target
    outcome = request_cancel(client, run_id, user_id=int(owner) if owner else None, bus=bus)
    return CancelResult(
        run_id=run_id, outcome="cancelled" if outcome == "cancelled" else "requested"
    )
