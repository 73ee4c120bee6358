"""Connecting to a real Redis, failing fast and without leaking passwords."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import redis

from platform_core.errors import AppError, ErrorCode
from platform_core.redis_connection import (
    connect,
    connect_async,
    mask_url,
    open_redis,
    resolve_redis_url,
)


def closed_port() -> int:
    """A port on which nothing listens (the kernel just freed it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://default:tok%40en@eu.upstash.io:6379", "rediss://default:***@eu.upstash.io:6379"),
        ("redis://alice@redis:6379", "redis://alice@redis:6379"),
        ("redis://redis:6379/0?password=hunter2&db=1", "redis://redis:6379/0?password=***&db=1"),
        (
            "unix:///run/redis.sock?db=0&Password=hunter2",
            "unix:///run/redis.sock?db=0&Password=***",
        ),
        ("redis://:hunter2@[::1:6379", "***"),
    ],
)
def test_mask_url_hides_passwords_only(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.integration
def test_connect_returns_a_working_client(redis_url: str) -> None:
    client = connect(redis_url)

    client.set("connect:test", "1")
    assert client.get("connect:test") == b"1"
    client.delete("connect:test")
    client.close()


@pytest.mark.integration
def test_unreachable_redis_is_a_clear_error_with_the_password_masked() -> None:
    url = f"redis://worker:hunter2@127.0.0.1:{closed_port()}/0"

    with pytest.raises(AppError) as raised:
        connect(url, timeout_s=0.5)

    assert raised.value.code is ErrorCode.REDIS_UNAVAILABLE
    assert "hunter2" not in str(raised.value)
    assert "redis://worker:***@127.0.0.1" in raised.value.message
    assert "REDIS_URL" in raised.value.message


@pytest.mark.integration
def test_a_client_for_blocking_reads_outwaits_the_connect_timeout(redis_url: str) -> None:
    """An RQ worker's BLPOP waits minutes; only connecting and the first PING are bounded."""
    short = connect(redis_url, timeout_s=0.2)
    blocking = connect(redis_url, timeout_s=0.2, blocking_reads=True)
    try:
        with pytest.raises(redis.TimeoutError):
            short.blpop(["nothing-queued"], timeout=1)
        assert blocking.blpop(["nothing-queued"], timeout=1) is None  # waited it out
    finally:
        short.close()
        blocking.close()
    with pytest.raises(AppError) as raised:
        connect(f"redis://127.0.0.1:{closed_port()}/0", timeout_s=0.2, blocking_reads=True)
    assert raised.value.code is ErrorCode.REDIS_UNAVAILABLE


def test_an_invalid_url_is_a_configuration_error() -> None:
    with pytest.raises(AppError) as raised:
        connect("http://:hunter2@redis:6379")

    assert raised.value.code is ErrorCode.CONFIG_INVALID
    assert "hunter2" not in str(raised.value)


@pytest.mark.integration
def test_connect_async_works_and_fails_like_connect(redis_url: str) -> None:
    async def scenario() -> None:
        client = await connect_async(redis_url)
        assert await client.ping()
        await client.aclose()
        with pytest.raises(AppError) as raised:
            await connect_async(f"redis://:hunter2@127.0.0.1:{closed_port()}", timeout_s=0.5)
        assert raised.value.code is ErrorCode.REDIS_UNAVAILABLE
        assert "hunter2" not in str(raised.value)
        with pytest.raises(AppError) as invalid:
            await connect_async("ftp://redis")
        assert invalid.value.code is ErrorCode.CONFIG_INVALID

    asyncio.run(scenario())


@pytest.mark.integration
def test_open_redis_without_url_runs_the_embedded_server_for_the_block(tmp_path: Path) -> None:
    with open_redis(None, tmp_path) as client:
        client.set("k", "v")
        assert (tmp_path / "redis" / "redis.json").exists()
        assert client.get("k") == b"v"

    assert not (tmp_path / "redis" / "redis.json").exists()  # the last holder stopped it


@pytest.mark.integration
def test_open_redis_with_url_uses_that_redis(redis_url: str, tmp_path: Path) -> None:
    with open_redis(redis_url, tmp_path) as client:
        assert client.ping()

    assert not (tmp_path / "redis").exists()


@pytest.mark.integration
def test_resolve_redis_url_hands_out_the_embedded_url_to_release(tmp_path: Path) -> None:
    assert resolve_redis_url("redis://redis:6379/0", tmp_path) == ("redis://redis:6379/0", None)

    url, embedded = resolve_redis_url("", tmp_path)  # empty means unset

    assert embedded is not None
    assert url == embedded.url
    assert connect(url).ping()
    embedded.release()
    assert not embedded.is_running()


@pytest.mark.integration
@pytest.mark.parametrize("round_", [1, 2])
def test_redis_client_fixture_starts_each_test_on_an_empty_database(
    redis_client: redis.Redis, round_: int
) -> None:
    assert redis_client.dbsize() == 0  # the other round's key was flushed
    redis_client.set(f"round:{round_}", "1")
