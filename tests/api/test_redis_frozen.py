"""A Redis that stops answering (frozen with SIGSTOP, as a hung or swapping server would be)
makes each request answer 503 within the configured timeout, not after retries of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from platform_core.embedded_redis import find_redis_server_binary
from platform_core.redis_connection import connect
from platform_core.settings import RedisSettings, Settings
from tests.api.conftest import serve

pytestmark = pytest.mark.integration
TIMEOUT_S = 1.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own: the shared one must not be frozen."""
    port = _free_port()
    server = subprocess.Popen(
        [
            *(str(find_redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            connect(url, timeout_s=0.5).close()
            break
        except Exception:
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.05)
    try:
        yield url, server
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        server.wait(timeout=10)


def test_a_frozen_redis_answers_503_within_the_timeout(
    own_redis: tuple[str, subprocess.Popen[bytes]], data_root: Path
) -> None:
    url, server = own_redis
    redis_settings = RedisSettings.model_validate({"url": url, "connect_timeout_s": TIMEOUT_S})
    settings = Settings(data_root=data_root, redis=redis_settings)
    for api in serve(settings):
        assert httpx.get(f"{api.base_url}/runs").status_code == 200  # connected and warm
        os.kill(server.pid, signal.SIGSTOP)
        for path in ("/runs", "/runs/some-run", "/readyz"):
            started = time.monotonic()
            response = httpx.get(f"{api.base_url}{path}", timeout=30)
            elapsed = time.monotonic() - started
            assert elapsed < TIMEOUT_S + 0.5, (path, elapsed)
            if path == "/readyz":  # readiness answers its report, Redis marked down
                assert (response.status_code, response.json()["redis"]) == (200, False)
            else:
                assert (response.status_code, response.json()["code"]) == (
                    503,
                    "REDIS_UNAVAILABLE",
                )
