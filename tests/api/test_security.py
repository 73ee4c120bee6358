"""API key, request size limit and error bodies that never carry a stack trace."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import httpx
import pytest
import redis
from pydantic import SecretStr
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.types import Message, Receive, Scope, Send

from platform_core.errors import ErrorCode
from platform_core.http_client import ApiError, TrainerClient
from platform_core.logging import configure_logging
from platform_core.settings import SecuritySettings, Settings
from tests.api.conftest import LiveApi, char_tokenizer, serve
from trainer_api.main import create_app
from trainer_api.routes import runs
from trainer_api.security import ApiKeyMiddleware

pytestmark = pytest.mark.integration
API_KEY = "s3cr3t-key-for-tests"


def _with_security(settings: Settings, **values: object) -> Settings:
    security = SecuritySettings.model_validate({**settings.security.model_dump(), **values})
    return settings.model_copy(update={"security": security})


@pytest.fixture
def locked_api(api_settings: Settings, redis_client: redis.Redis) -> Iterator[LiveApi]:
    yield from serve(_with_security(api_settings, api_key=SecretStr(API_KEY)))


@pytest.fixture
def small_api(api_settings: Settings, redis_client: redis.Redis) -> Iterator[LiveApi]:
    yield from serve(_with_security(api_settings, max_request_bytes=1024))


@pytest.mark.parametrize("sent", [None, "wrong-key", API_KEY + "x"])
def test_a_missing_or_wrong_key_is_401(
    locked_api: LiveApi, sent: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trainer_api.security")
    with TrainerClient(locked_api.base_url, api_key=sent) as client:
        for call in (client.list_runs, client.list_tokenizers):
            with pytest.raises(ApiError) as refused:
                call()
            assert (refused.value.status, refused.value.error_code) == (401, ErrorCode.UNAUTHORIZED)
            assert refused.value.request_id is not None
        with pytest.raises(ApiError) as streamed:
            next(iter(client.stream_events("any-run")))
        assert streamed.value.status == 401

    failures = [r for r in caplog.records if getattr(r, "event", None) == "api.auth_failed"]
    assert len(failures) == 3
    assert failures[0].__dict__["path"] == "/runs"
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in failures)
    assert API_KEY not in logged and "wrong-key" not in logged


def test_the_right_key_passes_and_probes_stay_open(locked_api: LiveApi, corpus: str) -> None:
    with TrainerClient(locked_api.base_url, api_key=API_KEY) as client:
        assert client.list_runs().total == 0
        assert client.train_tokenizer(char_tokenizer(corpus)).status == "queued"
    with TrainerClient(locked_api.base_url) as anonymous:
        assert anonymous.healthz().status == "ok"
        assert anonymous.readyz().status == "ready"
    assert httpx.get(f"{locked_api.base_url}/openapi.json").status_code == 200


def test_without_the_key_nothing_is_read_or_routed(
    api_settings: Settings, redis_client: redis.Redis
) -> None:
    locked = _with_security(api_settings, api_key=SecretStr(API_KEY), max_request_bytes=1024)
    for api in serve(locked):
        big = httpx.post(f"{api.base_url}/runs/train", content=b"x" * 5000)
        unknown = httpx.get(f"{api.base_url}/no/such/route", headers={"X-Request-ID": "u-1"})
        pages = [httpx.get(f"{api.base_url}{page}") for page in ("/docs", "/redoc")]
        keyed = httpx.get(f"{api.base_url}/no/such/route", headers={"X-Api-Key": API_KEY})
    assert big.status_code == 401  # refused before its body is read, so not 413
    assert unknown.status_code == 401
    assert unknown.json() == {
        "code": "UNAUTHORIZED",
        "message": "missing or invalid X-Api-Key header",
        "request_id": "u-1",
    }
    assert unknown.headers["x-request-id"] == "u-1"
    assert [page.status_code for page in pages] == [200, 200]
    assert keyed.status_code == 404


def test_the_schema_declares_the_key_on_every_route_but_the_open_ones() -> None:
    schema = create_app(Settings()).openapi()
    assert schema["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Api-Key",
    }
    secured = {
        path: [operation.get("security") for operation in operations.values()]
        for path, operations in schema["paths"].items()
    }
    # the probes answer GET and HEAD, both open
    assert secured.pop("/healthz") == [None, None] and secured.pop("/readyz") == [None, None]
    assert secured and all(
        found == [[{"APIKeyHeader": []}]] * len(found) for found in secured.values()
    )


def test_a_body_over_the_limit_is_413(small_api: LiveApi) -> None:
    url = f"{small_api.base_url}/tokenizers/train"
    big = {"spec": {"kind": "char"}, "padding": "x" * 5000}
    declared = httpx.post(url, json=big, headers={"X-Request-ID": "big-1"})
    assert declared.status_code == 413
    assert declared.json() == {
        "code": "PAYLOAD_TOO_LARGE",
        "message": "request body larger than 1024 bytes",
        "request_id": "big-1",
    }

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size shows only as it streams
        for _ in range(10):
            yield b" " * 500

    streamed = httpx.post(url, content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert streamed.json()["code"] == "PAYLOAD_TOO_LARGE"


def test_a_body_under_the_limit_passes(small_api: LiveApi) -> None:
    with TrainerClient(small_api.base_url) as client:
        accepted = client.train_tokenizer(char_tokenizer(None))
        assert client.get_run(accepted.run_id).status == "queued"


@pytest.mark.parametrize(
    ("failure", "status", "code", "message"),
    [
        (RuntimeError, 500, "INTERNAL", "internal error; see the API log"),
        (RedisConnectionError, 503, "REDIS_UNAVAILABLE", "Redis is unreachable; try again shortly"),
        (RedisTimeoutError, 503, "REDIS_UNAVAILABLE", "Redis is unreachable; try again shortly"),
    ],
)
def test_a_failure_reaches_the_client_as_a_typed_body_and_nothing_more(
    live_api: LiveApi,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failure: type[Exception],
    status: int,
    code: str,
    message: str,
) -> None:
    async def broken(*_args: object, **_kwargs: object) -> object:
        raise failure("redis://:hunter2@db:6379 said no")

    monkeypatch.setattr(runs, "load_run_async", broken)
    caplog.set_level(logging.CRITICAL)  # the server logs the traceback; the client must not see it
    response = httpx.get(f"{live_api.base_url}/runs/some-run", headers={"X-Request-ID": "r-1"})
    assert response.status_code == status
    assert response.json() == {"code": code, "message": message, "request_id": "r-1"}
    assert "hunter2" not in response.text and "Traceback" not in response.text


@pytest.mark.parametrize(
    ("scope_type", "path", "root_path", "passes"),
    [
        ("http", "/healthz", "", True),
        ("http", "/api/healthz", "/api", True),  # behind a proxy that mounts the API at /api
        ("http", "/api/healthz", "/api/", True),
        ("http", "/apihealthz", "/api", False),  # the root path ends at a segment boundary
        ("http", "/healthz/", "", False),  # only the exact open paths
        ("http", "/runs/r1", "", False),
        ("websocket", "/runs/r1/live", "", False),
        ("lifespan", "", "", True),
    ],
)
def test_the_key_middleware_opens_only_the_open_paths(
    scope_type: str, path: str, root_path: str, passes: bool
) -> None:
    reached: list[str] = []
    sent: list[Message] = []

    async def app(scope: Scope, _receive: Receive, _send: Send) -> None:
        reached.append(str(scope.get("path", "")))

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = ApiKeyMiddleware(app, api_key=SecretStr(API_KEY), open_paths={"/healthz"})
    scope: Scope = {"type": scope_type, "path": path, "root_path": root_path, "headers": []}
    asyncio.run(middleware(scope, receive, send))
    assert bool(reached) is passes
    if not passes:
        first = sent[0]
        expected = "websocket.close" if scope_type == "websocket" else "http.response.start"
        assert first["type"] == expected
        assert first.get("status", 401) == 401 and first.get("code", 1008) == 1008


def test_a_request_id_equal_to_the_key_is_never_logged(locked_api: LiveApi) -> None:
    """Context fields were logged as sent: an X-Request-ID holding the API key leaked it."""
    root = logging.getLogger()
    saved_handlers, saved_factory = list(root.handlers), logging.getLogRecordFactory()
    out = io.StringIO()
    configure_logging("model-trainer-api", secret_values=[API_KEY], stream=out)
    try:
        response = httpx.get(
            f"{locked_api.base_url}/runs", headers={"X-Request-ID": API_KEY, "X-Api-Key": "no"}
        )
    finally:
        logging.setLogRecordFactory(saved_factory)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
    assert response.status_code == 401
    assert '"request_id": "***"' in out.getvalue()
    assert API_KEY not in out.getvalue()


@pytest.mark.parametrize("sent", ["x" * 65, "a b", "id\u00e9"])
def test_a_request_id_that_is_no_plain_token_is_replaced(live_api: LiveApi, sent: str) -> None:
    response = httpx.get(
        f"{live_api.base_url}/healthz", headers={b"X-Request-ID": sent.encode("utf-8")}
    )
    assert response.headers["x-request-id"] != sent
    assert len(response.headers["x-request-id"]) == 32
