"""The requests, specs and answers of offline comparison and retraining (the API's bodies,
the runs' specs, the CLI's and the bot's calls), and each model's retraining policy with its
cron expression checked. Plain models: nothing here queues or imports RQ; the queueing and
the triggers are `platform_core.retraining`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from croniter import croniter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, StrictInt

from platform_core.api_models import DISCORD_ID_LIMIT
from platform_core.run_state import RunStatus
from platform_core.specs import ID_REGEX, SEMVER_REGEX, JsonRequest

DEFAULT_MIN_ACCURACY_GAIN: Final = 0.02  # the default: +2 accuracy points
DEFAULT_ALPHA: Final = 0.05  # McNemar's significance level
DEFAULT_GROWTH: Final = 0.10  # the default: 10 % more rows than production's dataset
COMPARISONS: Final = "comparisons"  # models/<name>/comparisons/<run id>/
REPORT_FILE: Final = "report.json"
CHART_FILE: Final = "report.png"

Trigger = Literal["manual", "schedule", "data_growth"]


# five fields (minute hour day month weekday, UTC) of cron's characters, one space apart: the
# shape the schema can state; the values (minute 0-59, month 1-12 or jan-dec...) croniter checks
CRON_PATTERN: Final = r"^[0-9A-Za-z*/,-]+( [0-9A-Za-z*/,-]+){4}$"


def _cron(value: str | None) -> str | None:
    """A cron expression as cron and RQ's scheduler read it; one croniter cannot read is
    refused with the expression in the message."""
    if value is not None and not croniter.is_valid(value):
        raise ValueError(f"{value!r} is not a valid cron expression (e.g. '0 3 * * 1')")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Request(JsonRequest):
    """A request body: unknown fields refused, numbers finite, whole numbers read as ints."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# the Discord user told of a verdict; a Discord id (snowflake) fits in 63 bits
DiscordId = Annotated[StrictInt, Field(ge=0, lt=DISCORD_ID_LIMIT)]


class RetrainPolicy(_Request):
    """How and when a model retrains (PUT /models/{name}/retrain-policy)."""

    cron: Annotated[str | None, AfterValidator(_cron)] = Field(
        default=None, max_length=100, pattern=CRON_PATTERN
    )
    # retrain when a dataset prepared from the production dataset's source has this many
    # more rows (0.1 = 10 %); None: no data-growth trigger
    growth_threshold: float | None = Field(default=DEFAULT_GROWTH, gt=0, le=100)
    min_accuracy_gain: float = Field(default=DEFAULT_MIN_ACCURACY_GAIN, ge=-1, le=1)
    alpha: float = Field(default=DEFAULT_ALPHA, gt=0, lt=1)
    owner_id: DiscordId | None = None  # the Discord user told of each verdict


class RetrainPolicyPublic(_Strict):
    name: str
    policy: RetrainPolicy
    updated_at: datetime


class RetrainRequest(_Request):
    """POST /models/{name}/retrain: a prepared dataset to train on (default: prepare the
    production dataset's spec again), who asks."""

    dataset_id: str | None = Field(default=None, pattern=ID_REGEX)
    user_id: DiscordId | None = None
    actor: str = Field(default="api", min_length=1, max_length=100)


class RetrainSpec(_Strict):
    """The `retrain_model` run's spec: everything it needs, resolved when queued."""

    name: str = Field(pattern=ID_REGEX)
    trigger: Trigger
    production_version: str = Field(pattern=SEMVER_REGEX)
    dataset_id: str = Field(pattern=ID_REGEX)
    train_run: str = Field(pattern=ID_REGEX)
    min_accuracy_gain: float = Field(ge=-1, le=1)
    alpha: float = Field(gt=0, lt=1)
    actor: str = Field(min_length=1, max_length=100)


class RetrainAccepted(_Strict):
    run_id: str  # the retraining's own run (its verdict); the chain's last link
    name: str
    trigger: Trigger
    production_version: str
    dataset_id: str
    dataset_run: str | None  # the preparation queued, None when a prepared dataset was given
    train_run: str
    status: RunStatus


class CompareRequest(_Request):
    """POST /models/{name}/compare: two versions on one labelled test split."""

    candidate: str = Field(pattern=SEMVER_REGEX)
    current: str | None = Field(default=None, pattern=SEMVER_REGEX)  # default: production
    dataset_id: str | None = Field(default=None, pattern=ID_REGEX)  # default: candidate's
    min_accuracy_gain: float = Field(default=DEFAULT_MIN_ACCURACY_GAIN, ge=-1, le=1)
    alpha: float = Field(default=DEFAULT_ALPHA, gt=0, lt=1)
    user_id: DiscordId | None = None


class CompareSpec(_Strict):
    """The `compare_models` run's spec, resolved when queued."""

    name: str = Field(pattern=ID_REGEX)
    current: str = Field(pattern=SEMVER_REGEX)
    candidate: str = Field(pattern=SEMVER_REGEX)
    dataset_id: str = Field(pattern=ID_REGEX)
    min_accuracy_gain: float = Field(ge=-1, le=1)
    alpha: float = Field(gt=0, lt=1)


class ComparisonPublic(_Strict):
    """GET /models/{name}/comparisons/{run_id}: the run's state, and its report once done."""

    run_id: str
    name: str
    status: RunStatus
    message: str | None
    report: dict[str, JsonValue] | None  # report.json: versions, dataset, ABDecision
