"""A/B serving's Redis state on a real Redis: stable assignment in the split's proportions,
outcomes counted once whichever of answer and label comes first, and the refusals."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import redis

from platform_core import ab_serving
from platform_core.ab_models import FeedbackRequest, TrafficSplit
from platform_core.ab_serving import (
    assign,
    get_traffic,
    outcomes,
    prediction_key,
    record_assignments,
    record_feedback,
    record_served,
    served_model,
    set_traffic,
    version_labels,
)
from platform_core.errors import AppError, ErrorCode
from platform_core.inference_results import InferenceError, InferenceRecord, save_record
from platform_core.layout import DataLayout
from platform_core.model_registry import ModelRegistry

pytestmark = pytest.mark.integration


def _saved_run(layout: DataLayout, run_id: str, config: object) -> str:
    folder = layout.model_dir(run_id)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return run_id


@pytest.fixture
def layout(data_root: Path) -> DataLayout:
    return DataLayout(data_root)


@pytest.fixture
def registry(redis_client: redis.Redis, layout: DataLayout) -> ModelRegistry:
    registry = ModelRegistry(redis_client, layout)
    run = _saved_run(layout, "run-c", {"id2label": {"0": "neg", "1": "pos"}})
    for version in ("1.0.0", "1.1.0"):
        registry.register("m", version, source_run=run, dataset_id=None, actor="t", reason="")
    return registry


def test_assignment_is_stable_and_follows_the_weights() -> None:
    weights = {"1.1.0": 10, "1.0.0": 90}
    first = [assign("m", f"caller-{n}", weights) for n in range(5000)]
    again = [assign("m", f"caller-{n}", dict(reversed(weights.items()))) for n in range(5000)]
    assert first == again  # the order the weights came in changes nothing
    share = Counter(first)["1.1.0"] / len(first)
    assert 0.08 < share < 0.12
    callers = [f"caller-{n}" for n in range(100)]
    # the name is part of the hash: each model places its callers anew
    assert any(assign("m", c, weights) != assign("other", c, weights) for c in callers)


def test_a_split_is_stored_and_read_back(
    redis_client: redis.Redis, registry: ModelRegistry
) -> None:
    split = TrafficSplit(weights={"1.1.0": 25, "1.0.0": 75}, actor="ana")
    stored = set_traffic(redis_client, registry, "m", split)
    assert list(stored.weights) == ["1.0.0", "1.1.0"]  # in version order
    assert get_traffic(redis_client, registry, "m") == stored
    with pytest.raises(AppError) as unknown:
        get_traffic(redis_client, registry, "nothing")
    assert unknown.value.code is ErrorCode.NOT_FOUND


def test_outcomes_are_counted_once_in_either_order(
    redis_client: redis.Redis, layout: DataLayout, registry: ModelRegistry
) -> None:
    record_assignments(redis_client, "m", "1.0.0", ["r1-0", "r1-1"])
    record = InferenceRecord(
        request_id="r1",
        run_id="run-c",
        kind="predict",
        status="completed",
        request={"texts": ["x", "y"]},
        result={"predictions": [{"label": "pos"}, {"label": "neg"}]},
    )
    save_record(redis_client, record)
    # r1-0 labelled before the answer, r1-1 after it
    record_feedback(redis_client, layout, "m", FeedbackRequest(prediction_id="r1-0", label="pos"))
    assert outcomes(redis_client, "m") == []
    record_served(redis_client, "m", "r1", latency_ms=5.0)
    record_served(redis_client, "m", "r1", latency_ms=6.0)  # a retried job counts nothing twice
    recorded = record_feedback(
        redis_client, layout, "m", FeedbackRequest(prediction_id="r1-1", label="pos")
    )
    assert (recorded.predicted, recorded.recorded) == ("neg", True)
    (outcome,) = outcomes(redis_client, "m")
    assert (outcome.version, outcome.labelled, outcome.correct) == ("1.0.0", 2, 1)
    assert redis_client.hget(prediction_key("m", "r1-0"), "latency_ms") == b"5.000"


def test_record_served_skips_what_it_cannot_read(redis_client: redis.Redis) -> None:
    assert record_served(redis_client, "m", "gone", latency_ms=1.0) is None  # expired
    record_assignments(redis_client, "m", "1.0.0", ["r2-0"])
    odd = InferenceRecord(
        request_id="r2",
        run_id="run-c",
        kind="predict",
        status="failed",
        request={"texts": ["x"]},
        error=InferenceError(code=ErrorCode.MODEL_NOT_FOUND, message="gone"),
    )
    save_record(redis_client, odd)
    assert record_served(redis_client, "m", "r2", latency_ms=1.0) == odd
    assert redis_client.hget(prediction_key("m", "r2-0"), "predicted") is None
    answered_oddly = odd.model_copy(
        update={"status": "completed", "error": None, "result": {"predictions": [{"n": 1}]}}
    )
    save_record(redis_client, answered_oddly)
    record_served(redis_client, "m", "r2", latency_ms=1.0)
    assert redis_client.hget(prediction_key("m", "r2-0"), "predicted") is None


def test_labels_come_from_a_classifier_config(
    redis_client: redis.Redis, layout: DataLayout, registry: ModelRegistry
) -> None:
    assert version_labels(layout, "m", "1.0.0") == ["neg", "pos"]
    lm = _saved_run(layout, "run-lm", {"model_type": "gpt2"})
    registry.register("lm", "1.0.0", source_run=lm, dataset_id=None, actor="t", reason="")
    with pytest.raises(AppError) as not_classifier:
        version_labels(layout, "lm", "1.0.0")
    assert not_classifier.value.code is ErrorCode.CONFLICT
    assert "not a classifier" in not_classifier.value.message
    with pytest.raises(AppError) as unreadable:
        version_labels(layout, "m", "9.9.9")
    assert unreadable.value.code is ErrorCode.CONFLICT


def test_feedback_on_a_prediction_that_expires_meanwhile(
    redis_client: redis.Redis,
    layout: DataLayout,
    registry: ModelRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record_assignments(redis_client, "m", "1.0.0", ["r3-0"])

    def expiring(layout: DataLayout, name: str, version: str) -> list[str]:
        redis_client.delete(prediction_key(name, "r3-0"))  # its window ends right here
        return ["neg", "pos"]

    monkeypatch.setattr(ab_serving, "version_labels", expiring)
    with pytest.raises(AppError) as expired:
        record_feedback(
            redis_client, layout, "m", FeedbackRequest(prediction_id="r3-0", label="pos")
        )
    assert expired.value.code is ErrorCode.NOT_FOUND


def test_the_served_model_of_a_job_spec() -> None:
    assert served_model({"run_id": "r", "request": {}}) is None
    assert served_model({"model": {"name": "m", "version": "1.0.0"}}) == ("m", "1.0.0")
    with pytest.raises(AppError) as malformed:
        served_model({"model": {"name": "m", "version": "latest"}})
    assert malformed.value.code is ErrorCode.INVALID_INPUT
