"""Fixtures shared by every test package.

- `redis_url`: a real Redis for the whole session. `TEST_REDIS_URL` when set (it must point
  at a throwaway database: `redis_client` flushes it), else an embedded redis-server under
  the session's temporary directory, stopped when the session ends. Tests never rely on a
  Redis that happens to run on the machine.
- `redis_client`: a client on that Redis, its database flushed before the test.
- `data_root`: an empty data root for the test.

MLflow tracking is off unless a test turns it on (`APP__TRACKING__ENABLED=true`, as the
tracking tests do): every other test that trains through the jobs would otherwise create an
MLflow store, which costs seconds a test and tests nothing of its own.

Tests marked `gpu` are deselected when no CUDA device is present. torch is imported only
when such a test was collected, so packages that never load torch keep starting fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from platform_core.embedded_redis import EmbeddedRedis
from platform_core.redis_connection import connect

os.environ.setdefault("APP__TRACKING__ENABLED", "false")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("TEST_REDIS_URL")
    if configured:
        yield configured
        return
    embedded = EmbeddedRedis(tmp_path_factory.mktemp("redis-data-root"))
    url = embedded.acquire()
    try:
        yield url
    finally:
        embedded.release()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = connect(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items or _cuda_available():
        return
    config.hook.pytest_deselected(items=gpu_items)
    items[:] = [item for item in items if item.get_closest_marker("gpu") is None]


def _cuda_available() -> bool:
    try:
        import torch  # noqa: PLC0415 - imported only when a gpu test was collected
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
