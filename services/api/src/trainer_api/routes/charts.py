"""A run's chart: `GET /runs/{id}/chart.png`, drawn from the run's whole metric history."""

from __future__ import annotations

from fastapi import APIRouter, Response

from platform_core.errors import AppError, ErrorCode
from trainer_api.deps import DataRootDep, RedisDep, RunIdPath
from trainer_api.errors import OpenApiResponses, error_responses
from trainer_api.run_chart import chart_png, read_history
from trainer_api.run_views import run_exists, run_folder

router = APIRouter(prefix="/runs", tags=["runs"], responses=error_responses(401))
PNG: OpenApiResponses = {200: {"description": "the chart", "content": {"image/png": {}}}}


@router.get(
    "/{run_id}/chart.png",
    response_class=Response,
    responses={**PNG, **error_responses(404)},
    operation_id="get_run_chart",  # a link target (GET /runs)
)
def run_chart(run_id: RunIdPath, client: RedisDep, data_root: DataRootDep) -> Response:
    """Training loss (raw and smoothed), eval loss and learning rate of the whole run; 404
    until it has recorded two training steps."""
    if not run_exists(client, data_root, run_id):
        raise AppError(ErrorCode.NOT_FOUND, f"run {run_id} does not exist")
    png = chart_png(f"{run_id} · loss", read_history(run_folder(data_root, run_id)))
    if png is None:
        raise AppError(ErrorCode.NOT_FOUND, f"run {run_id} has no training steps recorded yet")
    return Response(png, media_type="image/png")
