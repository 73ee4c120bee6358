"""The bodies of the online A/B serving endpoints (`/models/{name}/traffic|predict|feedback|ab`)
and the counts they rest on, apart from their Redis logic (`ab_serving`) so that the CLI
reads them without loading the queue (rq)."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from platform_core.specs import MAX_PREDICT_CHARS, MAX_PREDICT_TEXTS, SEMVER_REGEX

MAX_ARMS: Final = 4  # versions served at once: more splits the traffic too thin to compare
TOTAL_WEIGHT: Final = 100  # weights are whole percentages

Weight = Annotated[int, Field(ge=1, le=TOTAL_WEIGHT)]


class TrafficSplit(BaseModel):
    """`PUT /models/{name}/traffic`: version -> percentage of callers (summing to 100)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # keys: versions, checked against the registry (an unknown one is 404, as in the path)
    weights: dict[Annotated[str, Field(max_length=20)], Weight] = Field(
        min_length=1, max_length=MAX_ARMS
    )
    actor: str = Field(default="api", min_length=1, max_length=128)


class TrafficPublic(BaseModel):
    """A model's split; `configured` False: the default, all to production."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    weights: dict[str, int]
    configured: bool
    actor: str | None = None
    updated_at: float | None = None


class ServeRequest(BaseModel):
    """`POST /models/{name}/predict`: texts to label for a caller (a user or session id)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    caller_id: str = Field(min_length=1, max_length=256)
    texts: tuple[Annotated[str, Field(min_length=1, max_length=MAX_PREDICT_CHARS)], ...] = Field(
        min_length=1, max_length=MAX_PREDICT_TEXTS
    )


class ServeAccepted(BaseModel):
    """202 answer: the version that serves, one prediction id per text (for feedback), and
    the request id to poll."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    request_id: str
    prediction_ids: list[str]
    status: Literal["queued"] = "queued"


class FeedbackRequest(BaseModel):
    """`POST /models/{name}/feedback`: the true label of one prediction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prediction_id: str = Field(min_length=1, max_length=80)
    label: str = Field(min_length=1, max_length=256)


class FeedbackRecorded(BaseModel):
    """`recorded` False: the same label was already recorded (feedback is idempotent)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prediction_id: str
    version: str
    label: str
    predicted: str | None  # None while the prediction is still being answered
    recorded: bool


class Outcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    labelled: int  # predictions with a true label (and an answer)
    correct: int  # of those, the predicted label was the true one


class ServedModel(BaseModel):
    """What a predict job serves instead of a run's own model: a registered version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str = Field(pattern=SEMVER_REGEX)
