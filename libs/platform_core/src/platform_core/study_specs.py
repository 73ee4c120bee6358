"""What `POST /studies`, `trainctl study hpo` and the bot's `/study` send: an Optuna study over
a base training spec, validated the same way everywhere and importable without torch or
optuna.

A search space maps dotted paths of the base spec (`train.learning_rate`, `model.preset`,
`train.batch_size` ...) to a distribution. `validate_study` checks every path exists and that
the base spec still validates with each distribution's extremes applied (alone, and all lows
/ all highs together), so a study whose trials cannot start is refused before anything is
queued.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from platform_core.errors import AppError, ErrorCode, invalid_input
from platform_core.json_types import JsonObject
from platform_core.specs import MAX_SEED, MAX_STEPS, TrainRunSpec

MAX_SEARCH_PARAMS = 32  # a TPE over more dimensions than this needs thousands of trials
MAX_CHOICES = 64
MAX_TRIALS = 10_000
MAX_PARALLELISM = 64  # trials of one study at once: more workers than a study feeds usefully
MAX_TIMEOUT_S = 30 * 86_400.0  # a month
MAX_PATH_CHARS = 128
# a dotted path of identifiers: `train.learning_rate`
PATH_PATTERN = r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$"
# fields a trial must not change: its identity and data (the study's own rules set these)
_FIXED_PATHS = ("tokenizer_id", "corpus", "model.family", "model.pretrained", "retention")

ChoiceValue = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=128)]
ParamValue = bool | int | float | str
StudyMetric = Literal["eval_loss", "perplexity"]
Direction = Literal["minimize", "maximize"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: tuple[ChoiceValue, ...] = Field(min_length=1, max_length=MAX_CHOICES)

    def corners(self) -> list[ParamValue]:
        return list(self.choices)


class UniformParam(_Strict):
    type: Literal["uniform"]
    low: StrictFloat = Field(ge=-1e9, le=1e9)
    high: StrictFloat = Field(ge=-1e9, le=1e9)

    @model_validator(mode="after")
    def _ordered(self) -> UniformParam:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        return self

    def corners(self) -> list[ParamValue]:
        return [float(self.low), float(self.high)]


class LogUniformParam(_Strict):
    type: Literal["log_uniform"]
    low: StrictFloat = Field(gt=0, le=1e9)
    high: StrictFloat = Field(gt=0, le=1e9)

    @model_validator(mode="after")
    def _ordered(self) -> LogUniformParam:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        return self

    def corners(self) -> list[ParamValue]:
        return [float(self.low), float(self.high)]


class IntParam(_Strict):
    type: Literal["int"]
    low: StrictInt = Field(ge=-(10**9), le=10**9)
    high: StrictInt = Field(ge=-(10**9), le=10**9)
    step: StrictInt = Field(default=1, ge=1, le=10**9)
    log: StrictBool = False  # sample on a log scale (low >= 1, step 1)

    @model_validator(mode="after")
    def _ordered(self) -> IntParam:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("a log-scale int needs low >= 1 and step 1")
        return self

    def corners(self) -> list[ParamValue]:
        top = self.low + (self.high - self.low) // self.step * self.step
        return [self.low, top]


SearchParam = Annotated[
    CategoricalParam | UniformParam | LogUniformParam | IntParam, Field(discriminator="type")
]
ParamPath = Annotated[str, Field(min_length=1, max_length=MAX_PATH_CHARS, pattern=PATH_PATTERN)]


class SamplerSpec(_Strict):
    """TPE, seeded: the same study on the same results asks the same trials."""

    type: Literal["tpe"] = "tpe"
    seed: StrictInt = Field(default=1337, ge=0, le=MAX_SEED)
    # random trials before TPE models the space (Optuna's default)
    n_startup_trials: StrictInt = Field(default=10, ge=0, le=MAX_TRIALS)


class PrunerSpec(_Strict):
    """Median pruning: a trial whose metric at a step is worse than the median of earlier
    trials at that step stops there (ends "pruned")."""

    type: Literal["median", "none"] = "median"
    n_startup_trials: StrictInt = Field(default=5, ge=0, le=MAX_TRIALS)  # trials never pruned
    n_warmup_steps: StrictInt = Field(default=0, ge=0, le=MAX_STEPS)  # steps never pruned
    interval_steps: StrictInt = Field(default=1, ge=1, le=MAX_STEPS)


class StudySpec(_Strict):
    """What a study runs: `n_trials` trials of `base` with `search_space` applied, at most
    `parallelism` at once, for at most `timeout_s`."""

    name: str = Field(default="study", min_length=1, max_length=128)
    base: TrainRunSpec
    search_space: dict[ParamPath, SearchParam] = Field(
        min_length=1,
        max_length=MAX_SEARCH_PARAMS,
        # the keys' pattern binds: JSON Schema's patternProperties alone lets other keys by
        json_schema_extra={"additionalProperties": False},
    )
    metric: StudyMetric = "eval_loss"  # the trial's validation metric, reported at each eval
    direction: Direction = "minimize"
    n_trials: StrictInt = Field(default=20, ge=1, le=MAX_TRIALS)
    timeout_s: Annotated[StrictFloat, Field(gt=0, le=MAX_TIMEOUT_S)] | None = None
    parallelism: StrictInt = Field(default=1, ge=1, le=MAX_PARALLELISM)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    # the checkpoints of the whole study on disk; None: bounded by counts (each running
    # trial's last and best, the best trial's best). Each running trial gets an equal share,
    # and one share stays for the best trial's best checkpoint.
    checkpoint_budget_gb: Annotated[StrictFloat, Field(gt=0, le=1_000_000)] | None = None

    @model_validator(mode="after")
    def _metric_direction(self) -> StudySpec:
        if self.metric in ("eval_loss", "perplexity") and self.direction != "minimize":
            raise ValueError(f"{self.metric} is a loss: the direction must be 'minimize'")
        return self

    @property
    def model_family(self) -> str:
        return self.base.model.family

    def trial_share_gb(self) -> float | None:
        """A running trial's part of the checkpoint budget."""
        if self.checkpoint_budget_gb is None:
            return None
        return float(self.checkpoint_budget_gb) / (min(self.parallelism, self.n_trials) + 1)


def apply_params(base: TrainRunSpec, params: Mapping[str, ParamValue]) -> TrainRunSpec:
    """The base spec with each dotted path set to its value, validated (INVALID_INPUT naming
    the problem otherwise)."""
    tree: JsonObject = json.loads(base.model_dump_json())
    for path, value in params.items():
        _set_path(tree, path, value)
    try:
        return TrainRunSpec.model_validate(tree)
    except ValidationError as exc:
        raise invalid_input(exc, what=f"trial spec with {dict(params)}") from exc


def trial_spec(spec: StudySpec, params: Mapping[str, ParamValue]) -> TrainRunSpec:
    """What one trial trains: the base with the trial's params, keeping one last and one best
    checkpoint within its share of the study's budget."""
    applied = apply_params(spec.base, params)
    share = spec.trial_share_gb()
    retention = applied.retention.model_copy(
        update={"keep_last_n": 1, "keep_best_k": 1, "max_total_size_gb": share}
    )
    return applied.model_copy(update={"retention": retention})


def validate_study(payload: Mapping[str, object]) -> StudySpec:
    """Parse and check a study request: fields, then every search-space path against the base
    spec (INVALID_INPUT naming each problem)."""
    try:
        spec = StudySpec.model_validate(payload)
    except ValidationError as exc:
        raise invalid_input(exc, what="study spec") from exc
    check_search_space(spec)
    return spec


def check_search_space(spec: StudySpec) -> None:
    """Every path a field of the base spec a trial may change, and the base spec valid with
    each distribution's extremes (INVALID_INPUT naming the first problem)."""
    tree: JsonObject = json.loads(spec.base.model_dump_json())
    for path in spec.search_space:
        if any(path == fixed or path.startswith(f"{fixed}.") for fixed in _FIXED_PATHS):
            raise AppError(
                ErrorCode.INVALID_INPUT, f"search_space: {path!r} is fixed for every trial"
            )
        if not _has_path(tree, path):
            raise AppError(
                ErrorCode.INVALID_INPUT,
                f"search_space: {path!r} is not a field of the base spec",
            )
    for path, param in spec.search_space.items():
        for value in param.corners():
            apply_params(spec.base, {path: value})
        if isinstance(param, UniformParam | LogUniformParam):
            # a draw between the corners is fractional: an integer field refuses it here, not
            # in a trial (the corners alone pass it: a request reads 8.0 as the integer 8)
            low, high = float(param.low), float(param.high)
            apply_params(spec.base, {path: low + (high - low) / math.pi})
    for pick in (0, -1):  # every low together, every high together
        corner = {path: param.corners()[pick] for path, param in spec.search_space.items()}
        apply_params(spec.base, corner)


def highest_corner(spec: StudySpec) -> TrainRunSpec:
    """The base spec with every distribution at its high end: the costliest trial, for the
    API's memory bound."""
    return apply_params(spec.base, {p: d.corners()[-1] for p, d in spec.search_space.items()})


def _has_path(tree: JsonObject, path: str) -> bool:
    node: object = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return not isinstance(node, dict)


def _set_path(tree: JsonObject, path: str, value: ParamValue) -> None:
    parts = path.split(".")
    node: object = tree
    for part in parts[:-1]:
        if not isinstance(node, dict):
            raise AppError(ErrorCode.INVALID_INPUT, f"{path!r} is not a field of the base spec")
        node = node.setdefault(part, {})
    if not isinstance(node, dict):
        raise AppError(ErrorCode.INVALID_INPUT, f"{path!r} is not a field of the base spec")
    if isinstance(value, float) and not math.isfinite(value):
        raise AppError(ErrorCode.INVALID_INPUT, f"{path!r}: {value} is not finite")
    node[parts[-1]] = copy.copy(value)
