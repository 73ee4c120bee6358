"""The typed HTTP client against a real local HTTP server that answers from a script."""

from __future__ import annotations

import json
import socket

import pytest
from pydantic import BaseModel, ConfigDict

from platform_core.api_models import HealthStatus, ReadyStatus
from platform_core.errors import ErrorCode
from platform_core.http_client import (
    MAX_RETRY_DELAY_S,
    ApiCall,
    ApiError,
    AsyncTrainerClient,
    TrainerClient,
    parse_retry_after,
    retry_delay_s,
)
from tests.platform_core.scripted_server import Reply, ScriptedServer, error_body

pytestmark = pytest.mark.integration

READY = {"status": "ready", "redis": True, "data_root_writable": True, "queue_depth": 2}


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str


def test_healthz_and_readyz_parse_into_typed_models(server: ScriptedServer) -> None:
    server.script(Reply(body={"status": "ok"}), Reply(body=READY))

    with TrainerClient(server.base_url + "/") as client:
        assert client.healthz() == HealthStatus(status="ok")
        assert client.readyz() == ReadyStatus(
            status="ready", redis=True, data_root_writable=True, queue_depth=2
        )

    assert [(seen.method, seen.path) for seen in server.seen] == [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
    ]


def test_every_request_carries_a_request_id_and_the_api_key_when_set(
    server: ScriptedServer,
) -> None:
    with TrainerClient(server.base_url, api_key="key-123") as client:
        client.healthz()
        client.healthz()
    with TrainerClient(server.base_url) as anonymous:
        anonymous.healthz()

    first, second, third = (seen.headers for seen in server.seen)
    assert len(first["x-request-id"]) == 32
    int(first["x-request-id"], 16)  # uuid4 hex
    assert first["x-request-id"] != second["x-request-id"]
    assert first["x-api-key"] == second["x-api-key"] == "key-123"
    assert "x-api-key" not in third


def test_an_error_body_becomes_an_api_error_with_its_code(server: ScriptedServer) -> None:
    server.script(Reply(404, error_body("NOT_FOUND", "run r1 not found")))

    with TrainerClient(server.base_url) as client, pytest.raises(ApiError) as raised:
        client.healthz()

    error = raised.value
    assert (error.status, error.code, error.message) == (404, "NOT_FOUND", "run r1 not found")
    assert error.error_code is ErrorCode.NOT_FOUND
    assert error.request_id == "req-1"
    assert str(error) == "NOT_FOUND: run r1 not found"


def test_an_unknown_error_code_is_kept_as_text(server: ScriptedServer) -> None:
    server.script(
        Reply(418, error_body("TEAPOT", "short and stout", None), {"X-Request-ID": "echoed"})
    )

    with TrainerClient(server.base_url) as client, pytest.raises(ApiError) as raised:
        client.healthz()

    assert raised.value.code == "TEAPOT"
    assert raised.value.error_code is None
    assert raised.value.request_id == "echoed"


def test_a_non_json_5xx_is_upstream_unavailable_without_the_html(server: ScriptedServer) -> None:
    page = b"<html><body><h1>500 Internal Server Error</h1></body></html>"
    server.script(Reply(500, page, {"Content-Type": "text/html"}))

    with TrainerClient(server.base_url, backoff_s=0.0) as client, pytest.raises(ApiError) as raised:
        client.healthz()

    error = raised.value
    assert error.code == "UPSTREAM_UNAVAILABLE"
    assert error.error_code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert "HTTP 500" in error.message
    assert "text/html" in error.message
    assert "<h1>" not in error.message
    assert error.request_id == server.seen[0].headers["x-request-id"]
    assert len(server.seen) == 1  # 500 is not a status that is retried


def test_a_non_json_4xx_is_internal(server: ScriptedServer) -> None:
    server.script(Reply(404, b""))

    with TrainerClient(server.base_url) as client, pytest.raises(ApiError) as raised:
        client.readyz()

    assert (raised.value.status, raised.value.code) == (404, "INTERNAL")
    assert "no content type" in raised.value.message


def test_a_success_body_that_does_not_match_the_model_is_internal(server: ScriptedServer) -> None:
    server.script(Reply(body={"status": "ok", "uptime_s": 3}))

    with TrainerClient(server.base_url) as client, pytest.raises(ApiError) as raised:
        client.healthz()

    assert (raised.value.status, raised.value.code) == (200, "INTERNAL")
    assert "HealthStatus" in raised.value.message


def test_a_get_is_retried_on_503_and_502_then_succeeds(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.script(
        Reply(503, error_body("UPSTREAM_UNAVAILABLE", "busy")),
        Reply(502, b"bad gateway"),
        Reply(body={"status": "ok"}),
    )

    with TrainerClient(server.base_url, backoff_s=0.0) as client:
        assert client.healthz().status == "ok"

    assert len(server.seen) == 3
    assert len({seen.headers["x-request-id"] for seen in server.seen}) == 1  # one logical call
    retries = [record for record in caplog.records if record.__dict__.get("event")]
    assert [record.__dict__["event"] for record in retries] == ["http_client.retry"] * 2


def test_retries_stop_after_max_retries(server: ScriptedServer) -> None:
    server.script(Reply(503, error_body("REDIS_UNAVAILABLE", "redis is down")))

    with (
        TrainerClient(server.base_url, max_retries=2, backoff_s=0.0) as client,
        pytest.raises(ApiError) as raised,
    ):
        client.readyz()

    assert (raised.value.status, raised.value.error_code) == (503, ErrorCode.REDIS_UNAVAILABLE)
    assert len(server.seen) == 3


def test_a_post_without_idempotency_key_is_never_retried(server: ScriptedServer) -> None:
    server.script(Reply(503, error_body("UPSTREAM_UNAVAILABLE", "busy")), Reply(body={"name": "x"}))
    call = ApiCall("POST", "/echo", Echo, body=Echo(name="x"))

    with TrainerClient(server.base_url, backoff_s=0.0) as client, pytest.raises(ApiError):
        client.call(call)

    assert len(server.seen) == 1
    assert json.loads(server.seen[0].body) == {"name": "x"}
    assert server.seen[0].headers["content-type"] == "application/json"


def test_a_post_with_idempotency_key_is_retried(server: ScriptedServer) -> None:
    server.script(Reply(503, error_body("UPSTREAM_UNAVAILABLE", "busy")), Reply(body={"name": "x"}))
    call = ApiCall("POST", "/echo", Echo, body=Echo(name="x"), idempotency_key="create-x")

    with TrainerClient(server.base_url, backoff_s=0.0) as client:
        assert client.call(call) == Echo(name="x")

    assert [seen.headers["idempotency-key"] for seen in server.seen] == ["create-x"] * 2


def test_retry_after_is_waited_for(server: ScriptedServer) -> None:
    server.script(
        Reply(429, error_body("RATE_LIMITED", "slow down"), {"Retry-After": "0.2"}),
        Reply(body={"status": "ok"}),
    )

    with TrainerClient(server.base_url, backoff_s=0.0) as client:
        client.healthz()

    first, second = server.seen
    assert second.at - first.at >= 0.2  # our own backoff is 0: the wait came from Retry-After


def test_a_timed_out_get_is_retried(server: ScriptedServer) -> None:
    server.script(Reply(delay_s=2.0), Reply(body={"status": "ok"}))

    with TrainerClient(server.base_url, timeout_s=0.2, backoff_s=0.0) as client:
        assert client.healthz().status == "ok"

    assert len(server.seen) == 2


def test_query_parameters_and_other_methods_are_sent(server: ScriptedServer) -> None:
    server.script(Reply(body={"name": "r1"}))
    call = ApiCall("delete", "/runs/r1", Echo, params={"force": "true"})

    with TrainerClient(server.base_url) as client:
        assert client.call(call).name == "r1"

    assert (server.seen[0].method, server.seen[0].path) == ("DELETE", "/runs/r1?force=true")


def test_connection_refused_is_an_api_error_naming_the_base_url() -> None:
    base_url = closed_port_url()

    with (
        TrainerClient(base_url, max_retries=1, backoff_s=0.0) as client,
        pytest.raises(ApiError) as raised,
    ):
        client.healthz()

    error = raised.value
    assert (error.status, error.error_code) == (0, ErrorCode.UPSTREAM_UNAVAILABLE)
    assert base_url in error.message
    assert "ConnectError" in error.message
    assert error.request_id is not None


def test_an_unsupported_url_fails_without_retrying() -> None:
    with TrainerClient("ftp://127.0.0.1:1") as client, pytest.raises(ApiError) as raised:
        client.healthz()

    assert raised.value.status == 0
    assert "UnsupportedProtocol" in raised.value.message


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("2", 2.0),
        ("0.5", 0.5),
        ("-1", None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_delay_doubles_honours_retry_after_and_is_capped() -> None:
    assert retry_delay_s(0, 0.2, None) == 0.2
    assert retry_delay_s(2, 0.2, None) == 0.8
    assert retry_delay_s(0, 0.2, 1.5) == 1.5
    assert retry_delay_s(3, 0.2, 0.1) == 1.6
    assert retry_delay_s(0, 0.2, 3600.0) == MAX_RETRY_DELAY_S
    assert retry_delay_s(20, 1.0, None) == MAX_RETRY_DELAY_S


@pytest.mark.anyio
async def test_async_client_parses_sends_headers_and_errors(server: ScriptedServer) -> None:
    server.script(
        Reply(body={"status": "ok"}),
        Reply(body=READY),
        Reply(409, error_body("CONFLICT", "run r1 is already running")),
    )

    async with AsyncTrainerClient(server.base_url, api_key="key-123") as client:
        assert await client.healthz() == HealthStatus(status="ok")
        assert (await client.readyz()).queue_depth == 2
        with pytest.raises(ApiError) as raised:
            await client.call(ApiCall("POST", "/runs/r1/start", Echo))

    assert raised.value.error_code is ErrorCode.CONFLICT
    assert all(seen.headers["x-api-key"] == "key-123" for seen in server.seen)
    assert len({seen.headers["x-request-id"] for seen in server.seen}) == 3


@pytest.mark.anyio
async def test_async_client_retries_idempotent_calls_only(server: ScriptedServer) -> None:
    busy = Reply(503, error_body("UPSTREAM_UNAVAILABLE", "busy"))
    server.script(busy, Reply(body={"status": "ok"}), busy, Reply(body={"name": "x"}))

    async with AsyncTrainerClient(server.base_url, backoff_s=0.0) as client:
        assert (await client.healthz()).status == "ok"
        with pytest.raises(ApiError) as raised:
            await client.call(ApiCall("POST", "/echo", Echo, body=Echo(name="x")))

    assert raised.value.status == 503
    assert [seen.method for seen in server.seen] == ["GET", "GET", "POST"]


@pytest.mark.anyio
async def test_async_connection_refused_is_an_api_error() -> None:
    base_url = closed_port_url()

    async with AsyncTrainerClient(base_url, max_retries=1, backoff_s=0.0) as client:
        with pytest.raises(ApiError) as raised:
            await client.healthz()

    assert (raised.value.status, raised.value.code) == (0, "UPSTREAM_UNAVAILABLE")
    assert base_url in raised.value.message
