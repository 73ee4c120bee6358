"""Online A/B serving through the API: a traffic split over two registered classifiers,
callers routed by a stable hash, predictions answered by a real worker from the registered
versions' files, true labels as feedback, and the analysis on labelled outcomes only."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from platform_core import api_calls
from platform_core.ab_analysis import MIN_LABELLED
from platform_core.ab_models import FeedbackRequest, ServeRequest, TrafficSplit
from platform_core.ab_serving import assign, log_key
from platform_core.api_models import ModelVersionCreate, PredictRecord, PromoteRequest
from platform_core.errors import ErrorCode
from platform_core.http_client import ApiError, TrainerClient
from platform_core.layout import DataLayout
from platform_core.queue import INFERENCE_QUEUE
from platform_core.specs import ClassifierPrediction
from tests.api.conftest import work
from tests.classify_models import save_servable_classifier

pytestmark = pytest.mark.integration
TEXTS = ("alpha beta", "queue table bucket", "gamma delta instance", "unknown words here")


@pytest.fixture
def two_versions(client: TrainerClient, data_root: Path) -> str:
    """`clf` 1.0.0 in production and 1.1.0 in staging, two differently seeded classifiers."""
    for run_id, seed, version in (("run-a", 0, "1.0.0"), ("run-b", 1, "1.1.0")):
        save_servable_classifier(data_root, run_id, seed=seed)
        client.call(
            api_calls.register_model_version(
                "clf", ModelVersionCreate(source_run=run_id, version=version)
            )
        )
    client.call(api_calls.promote_model("clf", "1.0.0", PromoteRequest()))
    return "clf"


def _caller_for(version: str, weights: dict[str, int], skip: int = 0) -> str:
    found = [f"user-{n}" for n in range(1000) if assign("clf", f"user-{n}", weights) == version]
    return found[skip]


def _log_entries(client: redis.Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The model's A/B log, typed (redis-py's stubs allow None everywhere)."""
    entries = client.xrange(log_key("clf")) or []
    return [
        (
            entry_id,
            {k: v for k, v in fields.items() if isinstance(k, bytes) and isinstance(v, bytes)},
        )
        for entry_id, fields in entries
        if isinstance(entry_id, bytes) and isinstance(fields, dict)
    ]


def _predicted(record: PredictRecord) -> list[str]:
    assert record.status == "completed" and record.result is not None, record.error
    labels = []
    for prediction in record.result.predictions:
        assert isinstance(prediction, ClassifierPrediction)
        labels.append(prediction.label)
    return labels


def test_split_routes_callers_and_feedback_feeds_the_analysis(
    client: TrainerClient, redis_client: redis.Redis, two_versions: str
) -> None:
    default = client.call(api_calls.model_traffic("clf"))
    assert (default.weights, default.configured) == ({"1.0.0": 100}, False)
    weights = {"1.0.0": 50, "1.1.0": 50}
    split = client.call(
        api_calls.set_model_traffic("clf", TrafficSplit(weights=weights, actor="ana"))
    )
    assert (split.weights, split.configured, split.actor) == (weights, True, "ana")

    texts = tuple(TEXTS[n % len(TEXTS)] for n in range(MIN_LABELLED))
    served = {}
    for version in weights:
        caller = _caller_for(version, weights)
        accepted = client.call(
            api_calls.serve_model("clf", ServeRequest(caller_id=caller, texts=texts))
        )
        assert accepted.version == version
        assert len(accepted.prediction_ids) == MIN_LABELLED
        again = client.call(
            api_calls.serve_model("clf", ServeRequest(caller_id=caller, texts=texts[:1]))
        )
        assert again.version == version  # the same caller, the same version
        served[version] = accepted
    work(redis_client, INFERENCE_QUEUE)

    # feedback: 1.0.0's answers are all right, 1.1.0's all wrong (the other label)
    answers = {}
    for version, accepted in served.items():
        record = client.call(api_calls.served_prediction("clf", accepted.request_id))
        answers[version] = _predicted(record)
    half = MIN_LABELLED // 2
    for version, accepted in served.items():
        for prediction_id, label in list(
            zip(accepted.prediction_ids, answers[version], strict=True)
        )[:half]:
            truth = label if version == "1.0.0" else {"a": "b", "b": "a"}[label]
            recorded = client.call(
                api_calls.model_feedback(
                    "clf", FeedbackRequest(prediction_id=prediction_id, label=truth)
                )
            )
            assert (recorded.version, recorded.predicted, recorded.recorded) == (
                version,
                label,
                True,
            )

    early = client.call(api_calls.model_ab("clf"))
    assert early.control == "1.0.0"
    assert [(arm.version, arm.labelled, arm.accuracy) for arm in early.arms] == [
        ("1.0.0", half, 1.0),
        ("1.1.0", half, 0.0),
    ]
    (waiting,) = early.comparisons
    assert not waiting.enough_data and waiting.p_value is None
    assert (
        "not enough data" in waiting.message
        and f"needs {MIN_LABELLED - half} more" in waiting.message
    )

    for version, accepted in served.items():
        for prediction_id, label in list(
            zip(accepted.prediction_ids, answers[version], strict=True)
        )[half:]:
            truth = label if version == "1.0.0" else {"a": "b", "b": "a"}[label]
            client.call(
                api_calls.model_feedback(
                    "clf", FeedbackRequest(prediction_id=prediction_id, label=truth)
                )
            )
    report = client.call(api_calls.model_ab("clf"))
    (comparison,) = report.comparisons
    assert comparison.enough_data and comparison.significant
    assert comparison.accuracy_difference == pytest.approx(-1.0)
    assert comparison.p_value is not None and comparison.p_value < 1e-6
    assert "1.1.0 is less accurate than 1.0.0" in comparison.message

    # the log: what was served and labelled, never the texts
    entries = _log_entries(redis_client)
    events = [fields[b"event"] for _, fields in entries]
    assert events.count(b"served") == 2 * MIN_LABELLED + 2
    assert events.count(b"feedback") == 2 * MIN_LABELLED
    logged = b" ".join(value for _, fields in entries for value in fields.values())
    assert b"alpha" not in logged and b"queue" not in logged
    first = next(fields for _, fields in entries if fields[b"event"] == b"served")
    assert float(first[b"latency_ms"]) > 0


def test_feedback_is_idempotent_and_checked(
    client: TrainerClient, redis_client: redis.Redis, two_versions: str
) -> None:
    accepted = client.call(
        api_calls.serve_model("clf", ServeRequest(caller_id="u", texts=TEXTS[:1]))
    )
    assert accepted.version == "1.0.0"  # no split: all to production
    (prediction_id,) = accepted.prediction_ids

    # a label before the answer: recorded, counted once the worker answers
    first = client.call(
        api_calls.model_feedback("clf", FeedbackRequest(prediction_id=prediction_id, label="a"))
    )
    assert (first.recorded, first.predicted) == (True, None)
    same = client.call(
        api_calls.model_feedback("clf", FeedbackRequest(prediction_id=prediction_id, label="a"))
    )
    assert same.recorded is False
    with pytest.raises(ApiError) as other:
        client.call(
            api_calls.model_feedback("clf", FeedbackRequest(prediction_id=prediction_id, label="b"))
        )
    assert (other.value.status, other.value.error_code) == (409, ErrorCode.CONFLICT)
    assert "already has the label 'a'" in other.value.message
    with pytest.raises(ApiError) as unknown_label:
        client.call(
            api_calls.model_feedback("clf", FeedbackRequest(prediction_id=prediction_id, label="c"))
        )
    assert (unknown_label.value.status, unknown_label.value.error_code) == (
        422,
        ErrorCode.INVALID_INPUT,
    )
    with pytest.raises(ApiError) as unknown_id:
        client.call(
            api_calls.model_feedback("clf", FeedbackRequest(prediction_id="ab-nope-0", label="a"))
        )
    assert (unknown_id.value.status, unknown_id.value.error_code) == (404, ErrorCode.NOT_FOUND)

    (unanswered,) = client.call(api_calls.model_ab("clf")).arms
    assert (unanswered.labelled, unanswered.accuracy) == (0, None)  # labelled, not answered
    work(redis_client, INFERENCE_QUEUE)
    (predicted,) = _predicted(client.call(api_calls.served_prediction("clf", accepted.request_id)))
    (arm,) = client.call(api_calls.model_ab("clf")).arms
    assert (arm.version, arm.labelled, arm.correct) == ("1.0.0", 1, int(predicted == "a"))


def test_split_and_serving_errors_are_typed(
    client: TrainerClient, redis_client: redis.Redis, two_versions: str, data_root: Path
) -> None:
    cases = [
        ({"1.0.0": 60, "1.1.0": 30}, 422, "sum to 90"),
        ({"1.0.0": 50, "2.0.0": 50}, 404, "no version 2.0.0"),
        ({"1.0.0": 20, "1.1.0": 20, "1.2.0": 20, "1.3.0": 20, "1.4.0": 20}, 422, ""),
    ]
    for weights, status, text in cases:
        with pytest.raises(ApiError) as refused:
            client.call(
                api_calls.set_model_traffic(
                    "clf", TrafficSplit.model_construct(weights=weights, actor="x")
                )
            )
        assert refused.value.status == status and text in refused.value.message
    client.call(api_calls.promote_model("clf", "1.1.0", PromoteRequest()))  # archives 1.0.0
    with pytest.raises(ApiError) as archived:
        client.call(api_calls.set_model_traffic("clf", TrafficSplit(weights={"1.0.0": 100})))
    assert (archived.value.status, archived.value.error_code) == (409, ErrorCode.CONFLICT)

    with pytest.raises(ApiError) as unknown:
        client.call(api_calls.serve_model("nothing", ServeRequest(caller_id="u", texts=TEXTS)))
    assert unknown.value.status == 404
    with pytest.raises(ApiError) as no_analysis:
        client.call(api_calls.model_ab("nothing"))
    assert (no_analysis.value.status, no_analysis.value.error_code) == (404, ErrorCode.NOT_FOUND)
    with pytest.raises(ApiError) as not_served:
        client.call(api_calls.served_prediction("clf", "ab-000000000000"))
    assert not_served.value.status == 404

    # a version whose files went missing: the request fails with a typed error, logged
    (DataLayout(data_root).model_version_dir("clf", "1.1.0") / "model.safetensors").unlink(
        missing_ok=True
    )
    accepted = client.call(
        api_calls.serve_model("clf", ServeRequest(caller_id="u", texts=TEXTS[:1]))
    )
    work(redis_client, INFERENCE_QUEUE)
    record = client.call(api_calls.served_prediction("clf", accepted.request_id))
    assert record.status == "failed" and record.error is not None
    assert record.error.code == ErrorCode.MODEL_NOT_FOUND
    failed = [f for _, f in _log_entries(redis_client) if f[b"event"] == b"failed"]
    assert failed[0][b"error_code"] == b"MODEL_NOT_FOUND"


def test_a_model_with_nothing_to_serve(client: TrainerClient, data_root: Path) -> None:
    save_servable_classifier(data_root, "run-s")
    client.call(api_calls.register_model_version("solo", ModelVersionCreate(source_run="run-s")))
    with pytest.raises(ApiError) as nothing:
        client.call(api_calls.serve_model("solo", ServeRequest(caller_id="u", texts=TEXTS)))
    assert (nothing.value.status, nothing.value.error_code) == (409, ErrorCode.CONFLICT)
    assert "no production version" in nothing.value.message
    report = client.call(api_calls.model_ab("solo"))
    assert (report.control, report.arms, report.comparisons) == (None, [], [])
