"""Offline comparison and retraining through the API (a real server, real Redis, the
project's client): a retraining queues its three chained runs and refuses a second one while
it runs; a comparison is queued and read back with its report; the retraining policy is
validated (a bad cron is a 422) and read back; every refusal is typed."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import redis
from rq import Queue
from rq.job import Job

from platform_core import api_calls
from platform_core.errors import ErrorCode
from platform_core.http_client import ApiError, TrainerClient
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.model_registry import ModelRegistry
from platform_core.queue import TRAINING_QUEUE
from platform_core.retrain_specs import CompareRequest, RetrainPolicy, RetrainRequest
from platform_core.run_state import RunStateStore, RunStatus
from tests.api.conftest import LiveApi, work
from tests.classify_models import save_tiny_classifier
from tests.manifests import write_run_manifest

pytestmark = pytest.mark.integration

OWNER = 123456789012345678


def _classifier_spec(dataset_id: str) -> JsonObject:
    return {
        "model": {"family": "classifier", "preset": "tiny"},
        "classifier": {"dataset_id": dataset_id},
        "train": {"max_steps": 10, "device": "cpu"},
    }


@pytest.fixture
def registry(live_api: LiveApi, redis_client: redis.Redis, data_root: Path) -> ModelRegistry:
    """`clf` 1.0.0 in production (a classifier run's spec on dataset ds-api) and 1.1.0 in
    staging; `bare` 1.0.0 in production without a run's spec."""
    rows = [
        {"text": f"word{n} topic{label} alpha beta gamma", "label": label}
        for label in ("x", "y")
        for n in range(12)
    ]
    (data_root / "rows.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    body = {"spec": {"source": {"kind": "file", "path": "rows.jsonl"}, "baseline": False}}
    accepted = httpx.post(f"{live_api.base_url}/datasets", json={**body, "dataset_id": "ds-api"})
    assert accepted.status_code == 202, accepted.text
    work(redis_client)
    registry = ModelRegistry(redis_client, DataLayout(data_root))
    for run_id in ("run-a", "run-b"):
        save_tiny_classifier(data_root, run_id)
        write_run_manifest(data_root / "runs" / run_id, _classifier_spec("ds-api"))
        registry.register("clf", None, source_run=run_id, dataset_id="ds-api", actor="t", reason="")
    registry.promote("clf", "1.0.0", "production", actor="t", reason="")
    save_tiny_classifier(data_root, "run-bare")
    registry.register("bare", None, source_run="run-bare", dataset_id=None, actor="t", reason="")
    registry.promote("bare", "1.0.0", "production", actor="t", reason="")
    return registry


def test_a_retraining_queues_its_chain_once_at_a_time(
    client: TrainerClient, redis_client: redis.Redis, registry: ModelRegistry
) -> None:
    accepted = client.call(api_calls.retrain_model("clf", RetrainRequest(user_id=OWNER)))
    assert (accepted.trigger, accepted.production_version) == ("manual", "1.0.0")
    assert accepted.dataset_run == accepted.dataset_id == f"{accepted.run_id}-data"
    store = RunStateStore(redis_client)
    chain = [accepted.dataset_id, accepted.train_run, accepted.run_id]
    assert [store.status(run) for run in chain] == [RunStatus.QUEUED] * 3
    assert [store.meta(run)["kind"] for run in chain] == [
        "prepare_dataset",
        "train_model",
        "retrain_model",
    ]
    # the training waits for the preparation, the verdict for the training
    jobs = [Job.fetch(run, connection=redis_client) for run in chain]
    assert jobs[1].dependency_ids == [chain[0]] and jobs[2].dependency_ids == [chain[1]]
    assert Queue(TRAINING_QUEUE, connection=redis_client).job_ids == [chain[0]]
    spec = json.loads(store.spec_json(accepted.train_run) or "{}")
    assert spec["classifier"]["dataset_id"] == accepted.dataset_id

    with pytest.raises(ApiError) as busy:
        client.call(api_calls.retrain_model("clf", RetrainRequest()))
    assert (busy.value.status, busy.value.error_code) == (409, ErrorCode.CONFLICT)
    assert accepted.run_id in str(busy.value)


def test_retraining_refusals_are_typed(
    client: TrainerClient, live_api: LiveApi, registry: ModelRegistry
) -> None:
    cases = [
        ("nothing", RetrainRequest(), 404),  # never registered
        ("bare", RetrainRequest(), 409),  # production holds no run's spec
        ("clf", RetrainRequest(dataset_id="ds-none"), 404),  # not prepared
    ]
    for name, body, status in cases:
        with pytest.raises(ApiError) as refused:
            client.call(api_calls.retrain_model(name, body))
        assert refused.value.status == status, name
    registry.register("fresh", None, source_run="run-a", dataset_id=None, actor="t", reason="")
    with pytest.raises(ApiError) as unpromoted:
        client.call(api_calls.retrain_model("fresh", RetrainRequest()))
    assert unpromoted.value.status == 409 and "no production version" in str(unpromoted.value)
    bad = httpx.post(f"{live_api.base_url}/models/clf/retrain", json={"dataset_id": "../x"})
    assert bad.status_code == 422 and bad.json()["code"] == "INVALID_INPUT"
    # a dataset given by id is used as is: no preparation queued
    given = client.call(api_calls.retrain_model("clf", RetrainRequest(dataset_id="ds-api")))
    assert given.dataset_run is None and given.dataset_id == "ds-api"


def test_a_comparison_is_queued_and_read_back(
    client: TrainerClient, redis_client: redis.Redis, data_root: Path, registry: ModelRegistry
) -> None:
    accepted = client.call(api_calls.compare_models("clf", CompareRequest(candidate="1.1.0")))
    assert accepted.kind == "compare_models"
    spec = json.loads(RunStateStore(redis_client).spec_json(accepted.run_id) or "{}")
    assert (spec["current"], spec["candidate"], spec["dataset_id"]) == ("1.0.0", "1.1.0", "ds-api")
    queued = client.call(api_calls.get_comparison("clf", accepted.run_id))
    assert (queued.status, queued.report) == (RunStatus.QUEUED, None)

    folder = DataLayout(data_root).registered_model_dir("clf") / "comparisons" / accepted.run_id
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"decision": {"decision": "KEEP"}}))
    for status in (RunStatus.RUNNING, RunStatus.COMPLETED):  # as the worker moves it
        RunStateStore(redis_client).set_status(accepted.run_id, status)
    done = client.call(api_calls.get_comparison("clf", accepted.run_id))
    assert done.status is RunStatus.COMPLETED
    assert done.report == {"decision": {"decision": "KEEP"}}

    # a report whose run Redis has forgotten still reads as completed
    old = folder.parent / "cmp-old"
    old.mkdir()
    (old / "report.json").write_text(json.dumps({"decision": {"decision": "PROMOTE"}}))
    assert client.call(api_calls.get_comparison("clf", "cmp-old")).status is RunStatus.COMPLETED


def test_comparison_refusals_are_typed(
    client: TrainerClient, live_api: LiveApi, registry: ModelRegistry
) -> None:
    registry.register("solo", None, source_run="run-a", dataset_id=None, actor="t", reason="")
    registry.register("solo", None, source_run="run-b", dataset_id=None, actor="t", reason="")
    cases = [
        ("clf", CompareRequest(candidate="9.9.9"), 404),  # no such version
        ("clf", CompareRequest(candidate="1.0.0"), 422),  # the same as production
        ("clf", CompareRequest(candidate="1.1.0", dataset_id="ds-none"), 404),
        ("solo", CompareRequest(candidate="1.1.0"), 409),  # no production to compare with
        ("bare", CompareRequest(candidate="1.0.0", current="1.0.0"), 422),
    ]
    for name, body, status in cases:
        with pytest.raises(ApiError) as refused:
            client.call(api_calls.compare_models(name, body))
        assert refused.value.status == status, (name, body)
    registry.register("bare", None, source_run="run-bare", dataset_id=None, actor="t", reason="")
    with pytest.raises(ApiError) as no_dataset:  # 1.1.0 records no dataset, none given
        client.call(api_calls.compare_models("bare", CompareRequest(candidate="1.1.0")))
    assert no_dataset.value.status == 422 and "records no dataset" in str(no_dataset.value)
    with pytest.raises(ApiError) as unknown:
        client.call(api_calls.get_comparison("clf", "cmp-none"))
    assert unknown.value.status == 404


def test_the_retrain_policy_is_validated_and_read_back(
    client: TrainerClient, live_api: LiveApi, registry: ModelRegistry
) -> None:
    with pytest.raises(ApiError) as none_yet:
        client.call(api_calls.get_retrain_policy("clf"))
    assert none_yet.value.status == 404
    policy = RetrainPolicy(cron="0 3 * * 1", growth_threshold=0.2, owner_id=OWNER)
    stored = client.call(api_calls.set_retrain_policy("clf", policy))
    assert stored.policy == policy
    assert client.call(api_calls.get_retrain_policy("clf")).policy == policy
    for body in (
        {"cron": "61 * * * *"},  # a minute past 59
        {"cron": "every day"},  # not five fields
        {"cron": "0 3 * * 1 2026"},  # six fields: not the cron RQ reads
        {"growth_threshold": 0},
        {"alpha": 1.5},
        {"min_accuracy_gain": "x"},
    ):
        answer = httpx.put(f"{live_api.base_url}/models/clf/retrain-policy", json=body)
        assert answer.status_code == 422, body
        assert answer.json()["code"] == "INVALID_INPUT" and answer.json()["request_id"]
    with pytest.raises(ApiError) as unregistered:
        client.call(api_calls.set_retrain_policy("nothing", policy))
    assert unregistered.value.status == 404
