"""The published OpenAPI schema holds: schemathesis runs every one of its checks over every
operation, with valid and invalid requests, against the live server with an API key: no 5xx,
each answer's status, content type, headers and body as the schema declares, valid requests
accepted, invalid ones refused, the key enforced, Allow on 405."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import schemathesis
from pydantic import SecretStr
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
from tests.api.conftest import LiveApi, serve
from trainer_api.main import create_app

pytestmark = pytest.mark.integration
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


# The schema as the app builds it; the live server publishes the same one (tested below).
PUBLISHED = create_app(Settings()).openapi()
schema = schemathesis.openapi.from_dict(PUBLISHED)

API_KEY = "schemathesis-key-1"  # the server under test has a key: the auth checks mean something
SEED = 16  # fixed: a run is reproducible; printed (with the command) when it fails
MAX_EXAMPLES = 10  # per operation and phase: ~1 minute on a quiet 2-core machine
HOOKS = "tests.api.schemathesis_hooks"


@pytest.fixture
def keyed_api(api_settings: Settings, redis_client: redis.Redis, known: None) -> Iterator[LiveApi]:
    """The API with an API key, over the `known` run, tokenizer and requests (schemathesis
    finds their ids through the links it infers, e.g. from GET /runs)."""
    security = api_settings.security.model_copy(update={"api_key": SecretStr(API_KEY)})
    yield from serve(api_settings.model_copy(update={"security": security}))


def test_every_check_of_schemathesis_holds_over_the_whole_schema(
    keyed_api: LiveApi, tmp_path: Path
) -> None:
    """`schemathesis run --checks all` (every phase: examples, coverage, fuzzing, stateful)
    over every operation the server publishes, with the credentials; 0 failures of any check.
    What schemathesis cannot see is explained in the hooks module."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{keyed_api.base_url}/openapi.json",
        "--checks=all",
        f"--header=X-Api-Key: {API_KEY}",
        f"--seed={SEED}",
        f"--max-examples={MAX_EXAMPLES}",
        "--generation-database=none",  # no .hypothesis folder in the repository
        "--no-color",
    ]
    root = Path(__file__).resolve().parents[2]  # the hooks module imports from here
    environment = {**os.environ, "SCHEMATHESIS_HOOKS": HOOKS, "PYTHONPATH": str(root)}
    done = subprocess.run(
        command,
        check=False,
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, (
        f"schemathesis failed with seed {SEED} (rerun: {' '.join(command)} with "
        f"SCHEMATHESIS_HOOKS={HOOKS}):\n{report[-20_000:]}"
    )
    assert f"Seed: {SEED}" in report


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
        "/runs/{run_id}/events/recent",
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
        "/models/{name}/traffic",
        "/models/{name}/predict",
        "/models/{name}/predictions/{request_id}",
        "/models/{name}/feedback",
        "/models/{name}/ab",
        "/models/{name}/compare",
        "/models/{name}/comparisons/{run_id}",
        "/models/{name}/retrain",
        "/models/{name}/retrain-policy",
        "/studies",
        "/studies/{study_id}",
        "/studies/{study_id}/cancel",
        "/studies/{study_id}/evaluate",
        "/studies/{study_id}/plots/{name}",
    } == paths
    assert "APIKeyHeader" in raw["components"]["securitySchemes"]


KNOWN: list[tuple[str, str, dict[str, str], JsonValue]] = [
    ("GET", "/tokenizers/{tokenizer_id}", {"tokenizer_id": "tok-1"}, None),
    ("GET", "/runs/{run_id}", {"run_id": "run-1"}, None),
    ("POST", "/runs/{run_id}/cancel", {"run_id": "run-1"}, None),
    ("GET", "/runs/{run_id}/logs", {"run_id": "run-1"}, None),
    ("GET", "/runs/{run_id}/logs/stream", {"run_id": "run-1"}, None),
    ("GET", "/runs/{run_id}/events", {"run_id": "run-1"}, None),
    ("GET", "/runs/{run_id}/events/recent", {"run_id": "run-1"}, None),
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
    assert statuses == [200, 200, 409, *[200] * 7, 202, 202, 202, 202, 200, 200, 200]
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
    assert response.headers["allow"] == "GET, HEAD"  # HEAD is served for every GET
    cancel = httpx.get(f"{live_api.base_url}/runs/some-run/cancel")
    assert (cancel.status_code, cancel.headers["allow"]) == (405, "POST")
    # one path, two routes (GET lists a model's versions, POST registers one): both named
    versions = httpx.delete(f"{live_api.base_url}/models/some-model/versions")
    assert (versions.status_code, versions.headers["allow"]) == (405, "GET, HEAD, POST")


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


def test_every_get_is_declared_with_its_head() -> None:
    """HeadAsGetMiddleware answers HEAD for every GET; the schema says so, headers only."""
    for path, operations in PUBLISHED["paths"].items():
        assert ("get" in operations) == ("head" in operations), path
        if "get" not in operations:
            continue
        head, get = operations["head"], operations["get"]
        assert head.get("parameters") == get.get("parameters"), path
        assert head.get("security") == get.get("security"), path
        assert set(head["responses"]) == set(get["responses"]), path
        assert all("content" not in answer for answer in head["responses"].values()), path
        assert head["operationId"] != get["operationId"]


def test_integer_bounds_are_published_exactly() -> None:
    """FastAPI writes bounds as floats: 2**63 - 1 became 2**63, which the server refused.
    Every integer's bound is an exact integer, and the one past 2**53 is a power of two."""
    bounds: list[object] = []

    def collect(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                collect(item)
        elif isinstance(node, dict):
            if node.get("type") == "integer":
                bounds.extend(
                    node[k] for k in ("minimum", "maximum", "exclusiveMaximum") if k in node
                )
            for child in node.values():
                collect(child)

    collect(PUBLISHED)
    assert bounds and all(type(bound) is int for bound in bounds)
    assert 2**63 in bounds  # user_id < 2**63
    assert all(abs(b) <= 2**53 or b == 2**63 for b in bounds if isinstance(b, int))


def test_every_error_is_declared_with_the_body_it_has() -> None:
    """FastAPI declares its own `HTTPValidationError` for a 422 no route declared (it was on
    GET /runs/{run_id}/chart.png); every error answers `{code, message, request_id}`."""
    assert "HTTPValidationError" not in str(PUBLISHED)
    for operations in PUBLISHED["paths"].values():
        for operation in operations.values():
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")) and "content" in answer:
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, status


def test_links_lead_from_listings_to_operations_that_exist() -> None:
    """GET /runs and GET /tokenizers link their ids to the chart and the artifact, so a client
    (and schemathesis' stateful phase) reaches them with real ids."""
    operation_ids = {
        operation["operationId"]
        for operations in PUBLISHED["paths"].values()
        for operation in operations.values()
    }
    found = []
    for path in ("/runs", "/tokenizers"):
        links = PUBLISHED["paths"][path]["get"]["responses"]["200"]["links"]
        assert "links" not in PUBLISHED["paths"][path]["head"]["responses"]["200"]
        for link in links.values():
            assert link["operationId"] in operation_ids
            found.append((link["operationId"], *sorted(link["parameters"].values())))
    assert found == [
        ("get_run_chart", "$response.body#/items/0/run_id"),
        ("download_artifact", "$response.body#/items/0/run_id", "runs"),
        ("download_artifact", "$response.body#/items/0/tokenizer_id", "tokenizers"),
    ]
