"""Acceptance implies runnability: specs drawn from the published schema's own bounds are
either refused by the spec or run a real training step in the worker's loop, ending with a
result or TRAINING_DIVERGED, the one failure that only the loss can tell.

Every train and model field is drawn over its whole declared range (minimum to maximum,
both ends included), except the ones that only scale the cost of the step, which are drawn
from their lower end: `max_steps` is 1, batch, block, accumulation and eval batches stay
small, the device is the CPU (so the precision is fp32) and torch.compile is off (minutes
per example otherwise).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from platform_core.errors import AppError, ErrorCode
from platform_core.json_types import JsonObject
from platform_core.specs import ModelSpec, TrainConfig, TrainRunSpec
from tests.worker.train_helpers import train_eval_split
from trainer_worker.models.registry import build_model
from trainer_worker.training.loop import train

pytestmark = pytest.mark.slow
TRAIN_IDS, EVAL_IDS = train_eval_split(4_000)
VOCAB = 256  # byte ids
# fields that only scale the cost of one step: drawn from [minimum, cap]
CAPS = {"block_size": 32, "batch_size": 4, "grad_accum_steps": 2, "eval_batches": 2}
# fp32 on the CPU (the spec refuses fp16 with device 'cpu'; bf16 there depends on the CPU)
FIXED: JsonObject = {"max_steps": 1, "device": "cpu", "precision": "auto", "compile": False}
SCHEMA = TrainRunSpec.model_json_schema()["$defs"]


def _number(prop: JsonObject, cap: object = None) -> st.SearchStrategy[object]:
    """Integers or floats within the property's declared bounds."""
    low = prop.get("minimum", prop.get("exclusiveMinimum"))
    high = prop.get("maximum", prop.get("exclusiveMaximum"))
    if prop.get("type") == "integer":
        assert isinstance(low, int) and isinstance(high, int)
        top = min(high, cap) if isinstance(cap, int) else high
        return st.integers(min_value=low, max_value=top)
    assert isinstance(low, int | float) and isinstance(high, int | float)
    return st.floats(
        min_value=float(low),
        max_value=float(high),
        exclude_min="exclusiveMinimum" in prop,
        exclude_max="exclusiveMaximum" in prop,
        allow_nan=False,
    )


def _value(prop: object, cap: object = None) -> st.SearchStrategy[object]:
    assert isinstance(prop, dict)
    variants = prop.get("anyOf")
    if isinstance(variants, list):
        return st.one_of([_value(variant, cap) for variant in variants])
    if prop.get("type") == "null":
        return st.none()
    if "enum" in prop:
        choices = prop["enum"]
        assert isinstance(choices, list)
        return st.sampled_from(choices)
    if prop.get("type") == "boolean":
        return st.booleans()
    return _number(prop, cap)


def _section(name: str, skip: tuple[str, ...] = ()) -> st.SearchStrategy[dict[str, object]]:
    properties = SCHEMA[name]["properties"]
    assert isinstance(properties, dict)
    fields = {
        field: _value(prop, CAPS.get(field))
        for field, prop in properties.items()
        if field not in skip and field not in FIXED
    }
    return st.fixed_dictionaries(fields)


def test_the_drawn_fields_are_every_numeric_and_choice_field() -> None:
    """A field added to the spec is drawn too (or capped or fixed here, on purpose)."""
    train = set(SCHEMA["TrainConfig"]["properties"])
    assert train == set(TrainConfig.__dataclass_fields__)
    assert set(CAPS) | set(FIXED) <= train


@settings(
    max_examples=100,
    deadline=None,
    database=None,  # no .hypothesis folder in the repository
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    train_fields=_section("TrainConfig"),
    model_fields=_section("ModelSpec", skip=("pretrained", "preset")),
)
def test_every_accepted_spec_runs_a_step(
    train_fields: dict[str, object], model_fields: dict[str, object]
) -> None:
    body = {
        "model": {**model_fields, "preset": "tiny"},
        "tokenizer_id": "tok",
        "train": {**train_fields, **FIXED},
    }
    try:
        spec = TrainRunSpec.model_validate(body)
    except ValidationError:
        event("refused by the spec")
        return  # refused at submission: nothing to run
    model_spec: ModelSpec = spec.model
    try:
        network = build_model(model_spec, VOCAB, eos_id=10)
        result = train(network, TRAIN_IDS, EVAL_IDS, spec.train)
    except AppError as err:  # a typed refusal of what only the run can know
        event(f"ran: {err.code.value}")
        # only the loss can say it diverged; everything else is checked at submission
        assert err.code is ErrorCode.TRAINING_DIVERGED, err.message
        return
    event("ran: one step")
    assert result.final_step == 1
    assert all(math.isfinite(loss) for loss in result.losses)
