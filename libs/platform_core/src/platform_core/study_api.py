"""The studies resource: request and answer models of `/studies` and the calls that send them
(`TrainerClient.call(create_study(...))`), shared by the API, the CLI and the bot."""

from __future__ import annotations

from typing import Annotated, Final, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from platform_core.api_calls import ApiCall, StreamCall
from platform_core.api_models import DISCORD_ID_LIMIT
from platform_core.json_types import JsonObject
from platform_core.run_state import RunStatus
from platform_core.specs import JsonRequest
from platform_core.study_specs import ParamValue, StudySpec

STRICT: Final = ConfigDict(extra="forbid", frozen=True)
STUDY_ID_REGEX: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,57}$"  # room for the trial suffix


TrialState = Literal["RUNNING", "COMPLETE", "PRUNED", "FAIL"]
# the PNGs a finished study's finalization draws in its folder, as `GET
# /studies/{id}/plots/{name}` serves them (importances need two completed trials that differ)
StudyPlot = Literal["optimization_history.png", "param_importances.png"]
HISTORY_PNG: Final = "optimization_history.png"
IMPORTANCE_PNG: Final = "param_importances.png"
STUDY_PLOTS: Final[tuple[StudyPlot, ...]] = (HISTORY_PNG, IMPORTANCE_PNG)


class TrialRecord(BaseModel):
    """One trial as the API, the CLI and the bot show it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    ticket: int
    trial_number: int | None = None  # Optuna's, once asked
    state: TrialState = "RUNNING"
    value: float | None = None
    params: dict[str, ParamValue] = {}


def best_trial(trials: list[TrialRecord], direction: str) -> TrialRecord | None:
    """The completed trial with the best value (pruned trials never count as best)."""
    done = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
    if not done:
        return None
    sign = 1.0 if direction == "minimize" else -1.0
    return min(done, key=lambda t: (sign * (t.value or 0.0), t.ticket))


class StudyCreate(JsonRequest):
    """POST /studies."""

    model_config = STRICT

    spec: StudySpec
    study_id: str | None = Field(default=None, pattern=STUDY_ID_REGEX)  # None: study-<hex>
    # the owner to DM
    user_id: Annotated[StrictInt, Field(ge=0, lt=DISCORD_ID_LIMIT)] | None = None


class StudyAccepted(BaseModel):
    """202 answer: the study and its first trials are queued."""

    model_config = STRICT

    study_id: str
    status: RunStatus
    trial_run_ids: list[str]


class StudySummary(BaseModel):
    """A study in a listing (the seed's `list-studies` columns)."""

    model_config = STRICT

    study_id: str
    name: str
    status: RunStatus
    model_family: str
    metric: str
    direction: Literal["minimize", "maximize"]
    n_trials: int
    trials_done: int
    best_value: float | None = None
    created_at: float | None = None  # UNIX seconds
    message: str | None = None


class StudyPublic(StudySummary):
    """GET /studies/{id}: its trials, the best so far and, once evaluated, the report."""

    parallelism: int
    user_id: int | None = None
    n_complete: int
    n_pruned: int
    n_failed: int
    trials: list[TrialRecord]
    best: TrialRecord | None = None
    report: JsonObject | None = None  # evaluation_report.json
    plots: list[StudyPlot] = []  # drawn so far, for GET /studies/{id}/plots/{name}


class StudyQuery(BaseModel):
    """GET /studies query: a status filter and paging, as GET /runs."""

    model_config = STRICT

    status: RunStatus | None = None
    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=2**31)


class StudyList(BaseModel):
    model_config = STRICT

    items: list[StudySummary]
    total: int
    limit: int
    offset: int


class StudyCancelResult(BaseModel):
    """POST /studies/{id}/cancel: no more trials; the running ones are asked to stop."""

    model_config = STRICT

    study_id: str
    cancelled_trials: list[str]


class StudyEvaluateAccepted(BaseModel):
    """POST /studies/{id}/evaluate: the best trial's evaluation is queued again."""

    model_config = STRICT

    study_id: str


def _study(study_id: str, *rest: str) -> str:
    return "/".join(["/studies", quote(study_id, safe=""), *rest])


def create_study(body: StudyCreate) -> ApiCall[StudyAccepted]:
    return ApiCall("POST", "/studies", StudyAccepted, body)


def list_studies(query: StudyQuery | None = None) -> ApiCall[StudyList]:
    found = (query or StudyQuery()).model_dump(exclude_none=True)
    return ApiCall("GET", "/studies", StudyList, params={k: str(v) for k, v in found.items()})


def get_study(study_id: str) -> ApiCall[StudyPublic]:
    return ApiCall("GET", _study(study_id), StudyPublic)


def cancel_study(study_id: str) -> ApiCall[StudyCancelResult]:
    return ApiCall("POST", _study(study_id, "cancel"), StudyCancelResult)


def evaluate_study(study_id: str) -> ApiCall[StudyEvaluateAccepted]:
    return ApiCall("POST", _study(study_id, "evaluate"), StudyEvaluateAccepted)


def study_plot(study_id: str, name: StudyPlot) -> StreamCall:
    return StreamCall(_study(study_id, "plots", name), "image/png")
