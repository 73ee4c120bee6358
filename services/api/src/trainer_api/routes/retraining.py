"""Offline comparison of two registered versions and retraining, under `/models/{name}`:
queue a comparison and read its report, queue a retraining, set the model's retraining
policy (cron schedule, data-growth trigger, promotion threshold)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, status
from fastapi import Path as PathParam

from platform_core.api_models import JobAccepted
from platform_core.errors import AppError, ErrorCode
from platform_core.layout import DataLayout
from platform_core.model_registry import ModelRegistry
from platform_core.paths import read_regular_text
from platform_core.retrain_specs import (
    COMPARISONS,
    REPORT_FILE,
    CompareRequest,
    ComparisonPublic,
    RetrainAccepted,
    RetrainPolicy,
    RetrainPolicyPublic,
    RetrainRequest,
)
from platform_core.retraining import get_policy, put_policy, request_compare, request_retrain
from platform_core.run_state import RunStatus
from platform_core.specs import ID_REGEX
from trainer_api.deps import DataRootDep, EventBusDep, RedisDep, RunIdPath
from trainer_api.errors import error_responses
from trainer_api.live_state import live_state

router = APIRouter(prefix="/models", tags=["models"], responses=error_responses(401))
NamePath = Annotated[str, PathParam(pattern=ID_REGEX, description="a registered model's name")]


@router.post(
    "/{name}/compare",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(404, 409, 422),
)
def compare(
    name: NamePath, body: CompareRequest, client: RedisDep, data_root: DataRootDep, bus: EventBusDep
) -> JobAccepted:
    """Queue an offline comparison of two versions on one labelled test split."""
    run_id, _ = request_compare(client, DataLayout(data_root), name, body, bus=bus)
    return JobAccepted(run_id=run_id, kind="compare_models", status=RunStatus.QUEUED)


@router.get("/{name}/comparisons/{run_id}", responses=error_responses(404, 422))
def get_comparison(
    name: NamePath, run_id: RunIdPath, client: RedisDep, data_root: DataRootDep
) -> ComparisonPublic:
    """A comparison's (or a retraining's) state, and its report once written."""
    path = DataLayout(data_root).registered_model_dir(name) / COMPARISONS / run_id / REPORT_FILE
    live = live_state(client, run_id)
    report = json.loads(read_regular_text(path)) if path.is_file() else None
    if live.kind not in ("compare_models", "retrain_model") or live.status is None:
        if report is None:
            raise AppError(ErrorCode.NOT_FOUND, f"model {name} has no comparison {run_id}")
        return ComparisonPublic(
            run_id=run_id, name=name, status=RunStatus.COMPLETED, message=None, report=report
        )
    return ComparisonPublic(
        run_id=run_id, name=name, status=live.status, message=live.message, report=report
    )


@router.post(
    "/{name}/retrain",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(404, 409, 422),
)
def retrain(
    name: NamePath, body: RetrainRequest, client: RedisDep, data_root: DataRootDep, bus: EventBusDep
) -> RetrainAccepted:
    """Retrain the production version's spec on newer data; promote only when better."""
    return request_retrain(
        client,
        DataLayout(data_root),
        name,
        trigger="manual",
        bus=bus,
        dataset_id=body.dataset_id,
        user_id=body.user_id,
        actor=body.actor,
    )


@router.put("/{name}/retrain-policy", responses=error_responses(404, 422))
def set_policy(
    name: NamePath, body: RetrainPolicy, client: RedisDep, data_root: DataRootDep
) -> RetrainPolicyPublic:
    """Set when the model retrains (cron, data growth) and what a promotion needs."""
    ModelRegistry(client, DataLayout(data_root)).versions(name)  # NOT_FOUND when unregistered
    return put_policy(client, name, body)


@router.get("/{name}/retrain-policy", responses=error_responses(404, 422))
def read_policy(name: NamePath, client: RedisDep) -> RetrainPolicyPublic:
    """The model's retraining policy."""
    stored = get_policy(client, name)
    if stored is None:
        raise AppError(ErrorCode.NOT_FOUND, f"model {name} has no retraining policy")
    return stored
