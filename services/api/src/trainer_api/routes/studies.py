"""Studies: start an Optuna study, list studies, describe one, cancel one, evaluate again.

The API never imports optuna: it validates the spec (`platform_core.study_specs`), checks what
the trials' worker would trip over (corpus, tokenizer, pretrained folder, memory at the
costliest corner of the search space) and enqueues the first trials (`platform_core.studies`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi import Path as PathParam

from platform_core.errors import AppError, ErrorCode
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.run_state import RunStatus
from platform_core.studies import STUDY_KIND, StudyStore, StudyView
from platform_core.study_api import (
    STUDY_ID_REGEX,
    STUDY_PLOTS,
    StudyAccepted,
    StudyCancelResult,
    StudyCreate,
    StudyEvaluateAccepted,
    StudyList,
    StudyPlot,
    StudyPublic,
    StudyQuery,
    StudySummary,
)
from platform_core.study_specs import check_search_space, highest_corner
from trainer_api.deps import DataRootDep, EventBusDep, RedisDep, SettingsDep
from trainer_api.errors import error_responses
from trainer_api.routes.charts import PNG
from trainer_api.submissions import check_corpus, check_train_spec, new_id

router = APIRouter(prefix="/studies", tags=["studies"], responses=error_responses(401))
StudyIdPath = Annotated[str, PathParam(pattern=STUDY_ID_REGEX)]
REPORT_FILE = "evaluation_report.json"  # written by the worker's trainer_worker.studies


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses=error_responses(404, 409, 422))
def create_study(
    body: StudyCreate,
    client: RedisDep,
    data_root: DataRootDep,
    settings: SettingsDep,
    bus: EventBusDep,
) -> StudyAccepted:
    """Queue a study: its first `parallelism` trials go on the training queue."""
    spec = body.spec
    check_search_space(spec)
    check_corpus(data_root, spec.base.corpus)
    check_train_spec(client, data_root, highest_corner(spec), settings.training.max_activation_gib)
    study_id = body.study_id or new_id("study")
    if DataLayout(data_root).study_dir(study_id).exists():
        raise AppError(ErrorCode.CONFLICT, f"study {study_id} already exists")
    trials = StudyStore(client).create(study_id, spec, user_id=body.user_id, bus=bus)
    return StudyAccepted(study_id=study_id, status=RunStatus.QUEUED, trial_run_ids=trials)


@router.get("", responses=error_responses(422))
def list_studies(
    query: Annotated[StudyQuery, Query()], client: RedisDep, data_root: DataRootDep
) -> StudyList:
    """Studies newest first, filtered by status, a page at a time (one index read)."""
    studies = StudyStore(client)
    found = studies.runs.page(
        status=query.status, kind=STUDY_KIND, offset=query.offset, limit=query.limit
    )
    items = [_public(studies.view(i), data_root) for i in found.run_ids]
    return StudyList(
        items=[StudySummary.model_validate(item.model_dump(include=_SUMMARY)) for item in items],
        total=found.total,
        limit=query.limit,
        offset=query.offset,
    )


@router.get("/{study_id}", responses=error_responses(404, 422))
def get_study(study_id: StudyIdPath, client: RedisDep, data_root: DataRootDep) -> StudyPublic:
    """The study, its trials, the best so far and, once evaluated, its report."""
    return _public(StudyStore(client).view(study_id), data_root)


@router.post("/{study_id}/cancel", responses=error_responses(404, 409, 422))
def cancel_study(study_id: StudyIdPath, client: RedisDep, bus: EventBusDep) -> StudyCancelResult:
    """Queue no more trials and ask the running ones to stop; 409 for a finished study."""
    cancelled = StudyStore(client).cancel(study_id, bus=bus)
    return StudyCancelResult(study_id=study_id, cancelled_trials=cancelled)


@router.post(
    "/{study_id}/evaluate",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(404, 409, 422),
)
def evaluate_study(study_id: StudyIdPath, client: RedisDep) -> StudyEvaluateAccepted:
    """Evaluate the finished study's best trial again (a new evaluation_report.json)."""
    studies = StudyStore(client)
    if not studies.status(study_id).is_terminal:
        raise AppError(ErrorCode.CONFLICT, f"study {study_id} has not finished yet")
    studies.enqueue_finalize(study_id)
    return StudyEvaluateAccepted(study_id=study_id)


@router.get(
    "/{study_id}/plots/{name}",
    response_class=Response,
    responses={**PNG, **error_responses(404, 422)},
)
def study_plot(
    study_id: StudyIdPath, name: StudyPlot, client: RedisDep, data_root: DataRootDep
) -> Response:
    """One of the plots the study's end draws (its optimisation history, its parameters'
    importances); 404 until drawn."""
    StudyStore(client).status(study_id)  # NOT_FOUND for an unknown study
    path = DataLayout(data_root).study_dir(study_id) / name
    if not path.is_file():
        raise AppError(
            ErrorCode.NOT_FOUND,
            f"study {study_id} has no {name}: the plots are drawn when it ends, importances "
            "from two completed trials that differ",
        )
    return Response(path.read_bytes(), media_type="image/png")


_SUMMARY = set(StudySummary.model_fields)


def _public(view: StudyView, data_root: Path) -> StudyPublic:
    spec, trials = view.spec, view.trials
    folder = DataLayout(data_root).study_dir(view.study_id)
    counts = {s: sum(1 for t in trials if t.state == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
    return StudyPublic(
        study_id=view.study_id,
        name=spec.name,
        status=view.status,
        model_family=spec.model_family,
        metric=spec.metric,
        direction=spec.direction,
        n_trials=spec.n_trials,
        trials_done=sum(counts.values()),
        best_value=view.best.value if view.best else None,
        created_at=view.created_at,
        message=view.message,
        parallelism=spec.parallelism,
        user_id=view.user_id,
        n_complete=counts["COMPLETE"],
        n_pruned=counts["PRUNED"],
        n_failed=counts["FAIL"],
        trials=trials,
        best=view.best,
        report=_report(folder),
        plots=[name for name in STUDY_PLOTS if (folder / name).is_file()],
    )


def _report(folder: Path) -> JsonObject | None:
    path = folder / REPORT_FILE
    if not path.is_file():
        return None
    try:
        report: JsonObject = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report
