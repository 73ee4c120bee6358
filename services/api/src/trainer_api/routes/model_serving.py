"""Online A/B serving of a registered model: its traffic split, predictions routed to a
version by a stable hash of the caller, true labels as feedback, and the analysis on
labelled outcomes (platform_core.ab_serving, platform_core.ab_analysis)."""

from __future__ import annotations

import json

from fastapi import APIRouter, status

from platform_core.ab_analysis import ABReport, analyse
from platform_core.ab_models import (
    FeedbackRecorded,
    FeedbackRequest,
    ServeAccepted,
    ServeRequest,
    TrafficPublic,
    TrafficSplit,
)
from platform_core.ab_serving import (
    assign,
    get_traffic,
    outcomes,
    prediction_ids,
    prediction_key,
    record_assignments,
    record_feedback,
    set_traffic,
    version_labels,
)
from platform_core.api_models import PredictRecord
from platform_core.errors import AppError, ErrorCode
from platform_core.inference_results import enqueue_inference, load_record
from platform_core.layout import DataLayout
from platform_core.model_registry import ModelRegistry
from platform_core.specs import PredictRequest
from trainer_api.deps import DataRootDep, RedisDep, RequestIdPath
from trainer_api.errors import error_responses
from trainer_api.routes.models import NamePath
from trainer_api.submissions import new_id

router = APIRouter(prefix="/models", tags=["models"], responses=error_responses(401))


@router.get("/{name}/traffic", responses=error_responses(404, 409, 422))
def get_split(name: NamePath, client: RedisDep, data_root: DataRootDep) -> TrafficPublic:
    """A model's traffic split (by default all to the production version)."""
    return get_traffic(client, ModelRegistry(client, DataLayout(data_root)), name)


@router.put("/{name}/traffic", responses=error_responses(404, 409, 413, 422))
def put_split(
    name: NamePath, body: TrafficSplit, client: RedisDep, data_root: DataRootDep
) -> TrafficPublic:
    """Set the split: registered, unarchived versions whose weights sum to 100."""
    return set_traffic(client, ModelRegistry(client, DataLayout(data_root)), name, body)


@router.post(
    "/{name}/predict",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(404, 409, 413, 422),
)
def serve(
    name: NamePath, body: ServeRequest, client: RedisDep, data_root: DataRootDep
) -> ServeAccepted:
    """Label texts with the version the caller is assigned; poll
    GET /models/{name}/predictions/{request_id}, send true labels to /feedback."""
    layout = DataLayout(data_root)
    registry = ModelRegistry(client, layout)
    version = assign(name, body.caller_id, get_traffic(client, registry, name).weights)
    source_run = registry.metadata(name, version).source_run
    version_labels(layout, name, version)  # refuses a version that is no classifier
    request_id = new_id("ab")
    ids = prediction_ids(request_id, len(body.texts))
    record_assignments(client, name, version, ids)
    request = json.loads(PredictRequest(texts=body.texts).model_dump_json())
    enqueue_inference(client, "predict", source_run, request_id, request, model=(name, version))
    return ServeAccepted(name=name, version=version, request_id=request_id, prediction_ids=ids)


@router.get("/{name}/predictions/{request_id}", responses=error_responses(404, 422))
def get_served(name: NamePath, request_id: RequestIdPath, client: RedisDep) -> PredictRecord:
    """A served request's status, and per text the label with probabilities once answered."""
    record = load_record(client, "predict", request_id)
    if record is None or not client.exists(prediction_key(name, f"{request_id}-0")):
        raise AppError(
            ErrorCode.NOT_FOUND, f"model {name} served no request {request_id} (or it expired)"
        )
    return PredictRecord.model_validate(json.loads(record.model_dump_json(exclude={"kind"})))


@router.post("/{name}/feedback", responses=error_responses(404, 409, 413, 422))
def feedback(
    name: NamePath, body: FeedbackRequest, client: RedisDep, data_root: DataRootDep
) -> FeedbackRecorded:
    """Record a prediction's true label; the same label again is accepted (idempotent), a
    different one is refused (409)."""
    return record_feedback(client, DataLayout(data_root), name, body)


@router.get("/{name}/ab", responses=error_responses(404, 422))
def ab_analysis(name: NamePath, client: RedisDep, data_root: DataRootDep) -> ABReport:
    """Per version: labelled outcomes and accuracy; each candidate against the control, or
    how much labelled data is still missing."""
    registry = ModelRegistry(client, DataLayout(data_root))
    try:
        weights = get_traffic(client, registry, name).weights
    except AppError as error:
        if error.code is not ErrorCode.CONFLICT:
            raise
        weights = {}  # nothing served now: the outcomes gathered so far still stand
    return analyse(name, weights, outcomes(client, name), registry.production(name))
