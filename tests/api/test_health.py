"""Health and readiness through a real server and the project's own typed client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import redis
from rq import Queue

from platform_core.http_client import ApiError, AsyncTrainerClient, TrainerClient
from platform_core.queue import TRAINING_QUEUE
from platform_core.settings import Settings
from tests.api.conftest import LiveApi, serve

pytestmark = pytest.mark.integration


def test_healthz_and_readyz(live_api: LiveApi, redis_client: redis.Redis) -> None:
    Queue(TRAINING_QUEUE, connection=redis_client).enqueue(
        "tests.job_fixtures.sleepy", args=("q", {})
    )
    with TrainerClient(live_api.base_url) as client:
        assert client.healthz().status == "ok"
        ready = client.readyz()
    assert ready.status == "ready"
    assert ready.redis and ready.data_root_writable
    assert ready.queue_depth == 1


def test_async_client(live_api: LiveApi) -> None:
    async def probe() -> str:
        async with AsyncTrainerClient(live_api.base_url) as client:
            return (await client.readyz()).status

    assert asyncio.run(probe()) == "ready"


def test_request_id_is_echoed_or_created(live_api: LiveApi) -> None:
    echoed = httpx.get(f"{live_api.base_url}/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    created = httpx.get(
        f"{live_api.base_url}/healthz", headers={"X-Request-ID": "bad id\twith junk"}
    )
    assert created.headers["x-request-id"] != "bad id\twith junk"
    assert len(created.headers["x-request-id"]) == 32


def test_unknown_route_is_a_typed_404(live_api: LiveApi) -> None:
    response = httpx.get(f"{live_api.base_url}/nope", headers={"X-Request-ID": "req-404"})
    assert response.status_code == 404
    assert response.json() == {"code": "NOT_FOUND", "message": "Not Found", "request_id": "req-404"}


def test_wrong_method_is_a_typed_error(live_api: LiveApi) -> None:
    response = httpx.post(f"{live_api.base_url}/healthz")
    assert response.status_code == 405
    assert response.json()["code"] == "INVALID_INPUT"


def test_not_ready_when_the_data_root_is_not_writable(
    api_settings: Settings, tmp_path: Path, redis_client: redis.Redis
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = api_settings.model_copy(update={"data_root": blocker / "data"})
    for api in serve(settings):
        with TrainerClient(api.base_url) as client:
            ready = client.readyz()
        assert ready.status == "not_ready"
        assert ready.redis and not ready.data_root_writable


def test_client_error_for_missing_server() -> None:
    with (
        TrainerClient("http://127.0.0.1:9", max_retries=0) as client,
        pytest.raises(ApiError) as info,
    ):
        client.healthz()
    assert info.value.status == 0
