"""The published OpenAPI schema holds: schemathesis generates requests for every operation
(valid and invalid) against the live server and checks that no answer is a 5xx and that each
answer's status, content type, headers and body are the ones the schema declares."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import CheckFunction
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.jsonschema.types import JsonValue

from platform_core.run_state import RunStateStore, RunStatus
from platform_core.settings import Settings
from tests.api.conftest import LiveApi
from trainer_api.main import create_app

pytestmark = pytest.mark.integration
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


class GeneratedCase(Protocol):
    """What the test uses of the request schemathesis generated."""

    def call_and_validate(self, *, base_url: str, checks: list[CheckFunction]) -> object: ...


# The schema as the app builds it; the live server publishes the same one (tested below). It
# is loaded at import, when pytest collects one test per operation.
PUBLISHED = create_app(Settings()).openapi()
schema = schemathesis.openapi.from_dict(PUBLISHED)


@schema.parametrize()
@settings(
    max_examples=10,
    deadline=None,
    database=None,  # no .hypothesis folder in the repository
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_its_schema_says(case: GeneratedCase, live_api: LiveApi) -> None:
    case.call_and_validate(base_url=live_api.base_url, checks=CHECKS)


def test_the_schema_is_published_with_every_route(live_api: LiveApi) -> None:
    raw = httpx.get(f"{live_api.base_url}/openapi.json").json()
    assert raw == PUBLISHED
    assert raw["info"]["title"] == "Model Trainer API"
    paths = set(raw["paths"])
    assert {
        "/healthz",
        "/readyz",
        "/tokenizers/train",
        "/tokenizers",
        "/tokenizers/{tokenizer_id}",
        "/runs/train",
        "/runs",
        "/runs/{run_id}",
        "/runs/{run_id}/cancel",
        "/runs/{run_id}/logs",
        "/runs/{run_id}/logs/stream",
        "/runs/{run_id}/chart.png",
        "/runs/{run_id}/events",
        "/runs/{run_id}/evaluate",
        "/runs/{run_id}/eval",
        "/runs/{run_id}/generate",
        "/runs/{run_id}/generate/{request_id}",
        "/runs/{run_id}/score",
        "/runs/{run_id}/score/{request_id}",
        "/runs/{run_id}/predict",
        "/runs/{run_id}/predict/{request_id}",
        "/artifacts/{kind}/{artifact_id}",
        "/datasets",
        "/datasets/{dataset_id}",
        "/models",
        "/models/{name}/versions",
        "/models/{name}/versions/{version}/promote",
        "/models/{name}/rollback",
    } == paths
    assert "APIKeyHeader" in raw["components"]["securitySchemes"]


KNOWN: list[tuple[str, str, dict[str, str], JsonValue]] = [
    ("GET", "/tokenizers/{tokenizer_id}", {"tokenizer_id": "tok-1"}, None),
    ("GET", "/runs/{run_id}", {"run_id": "run-1"}, None),
    ("POST", "/runs/{run_id}/cancel", {"run_id": "run-1"}, None),
    ("GET", "/runs/{run_id}/logs", {"run_id": "run-1"}, None),
    ("GET", "/runs/{run_id}/logs/stream", {"run_id": "run-1"}, None),
    ("GET", "/runs/{run_id}/events", {"run_id": "run-1"}, None),
    ("GET", "/runs/{run_id}/eval", {"run_id": "run-1"}, None),
    (
        "GET",
        "/runs/{run_id}/generate/{request_id}",
        {"run_id": "run-1", "request_id": "gen-1"},
        None,
    ),
    (
        "GET",
        "/runs/{run_id}/score/{request_id}",
        {"run_id": "run-1", "request_id": "score-1"},
        None,
    ),
    ("POST", "/runs/{run_id}/generate", {"run_id": "run-1"}, {"prompt": "The "}),
    ("POST", "/runs/{run_id}/score", {"run_id": "run-1"}, {"text": "The end"}),
    ("POST", "/runs/{run_id}/evaluate", {"run_id": "run-1"}, {}),
    ("POST", "/runs/{run_id}/predict", {"run_id": "run-1"}, {"texts": ["I can't sleep."]}),
    (
        "GET",
        "/runs/{run_id}/predict/{request_id}",
        {"run_id": "run-1", "request_id": "pred-1"},
        None,
    ),
    ("GET", "/artifacts/{kind}/{artifact_id}", {"kind": "runs", "artifact_id": "run-1"}, None),
    (
        "GET",
        "/artifacts/{kind}/{artifact_id}",
        {"kind": "tokenizers", "artifact_id": "tok-1"},
        None,
    ),
]


def test_known_resources_answer_as_their_schema_says(live_api: LiveApi, known: None) -> None:
    statuses = []
    for method, path, parameters, body in KNOWN:
        operation = schema[path][method]
        case = (
            operation.Case(path_parameters=parameters)
            if body is None
            else operation.Case(
                path_parameters=parameters, body=body, media_type="application/json"
            )
        )
        statuses.append(
            case.call_and_validate(base_url=live_api.base_url, checks=CHECKS).status_code
        )
    assert statuses == [
        200,
        200,
        409,
        200,
        200,
        200,
        200,
        200,
        200,
        202,
        202,
        202,
        202,
        200,
        200,
        200,
    ]
    eval_case = schema["/runs/{run_id}/eval"]["GET"].Case(
        path_parameters={"run_id": "run-1"}, query={"request_id": "eval-1"}
    )
    eval_case.call_and_validate(base_url=live_api.base_url, checks=CHECKS)


def test_every_get_answers_head_with_its_headers_only(
    live_api: LiveApi, redis_client: redis.Redis, data_root: Path
) -> None:
    RunStateStore(redis_client).set_status("run-h", RunStatus.RUNNING)
    (data_root / "runs" / "run-h").mkdir(parents=True)
    (data_root / "runs" / "run-h" / "logs.jsonl").write_text('{"message": "x"}\n')
    for path, content_type in [
        ("/runs", "application/json"),
        ("/runs/run-h/logs/stream", "text/event-stream"),  # a live stream: never started
        ("/runs/ghost", "application/json"),
    ]:
        get = httpx.get(f"{live_api.base_url}{path}", timeout=5) if "stream" not in path else None
        head = httpx.head(f"{live_api.base_url}{path}", timeout=5)
        assert head.content == b""
        assert head.headers["content-type"].startswith(content_type)
        if get is not None:
            assert head.status_code == get.status_code
            assert head.headers["content-length"] == get.headers["content-length"]


def test_a_method_not_allowed_names_the_allowed_ones(live_api: LiveApi) -> None:
    response = httpx.delete(f"{live_api.base_url}/runs")
    assert (response.status_code, response.json()["code"]) == (405, "INVALID_INPUT")
    assert response.headers["allow"] == "GET"
    cancel = httpx.get(f"{live_api.base_url}/runs/some-run/cancel")
    assert (cancel.status_code, cancel.headers["allow"]) == (405, "POST")


def test_redis_outages_and_body_limits_are_documented() -> None:
    for path, operations in PUBLISHED["paths"].items():
        for method, operation in operations.items():
            declared = set(operation["responses"])
            if path in {"/healthz", "/readyz"}:
                assert "503" not in declared
                continue
            assert "503" in declared, (method, path)
            if method == "post":
                assert "413" in declared, path


def test_no_parameter_is_declared_nullable() -> None:
    """A header or query value is absent or a string: `null` was declared for Last-Event-ID
    (and others) but no request can send it."""
    for operations in PUBLISHED["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                assert "anyOf" not in parameter["schema"], parameter["name"]
                assert parameter["schema"].get("type") != "null", parameter["name"]
