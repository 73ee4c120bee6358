"""Connecting to Redis: the configured one, or the embedded one when none is configured.

A configured Redis that cannot be reached is a clear REDIS_UNAVAILABLE error within about
`timeout_s`, never a hang: the first PING makes a single attempt. Once it answered, the client
retries a refused or dropped connection a few times with a short backoff, which rides out a
Redis restart without stalling a caller for long; a timeout is never retried, so a Redis that
stops answering fails each call within `timeout_s`. Messages never show a URL's password
(`mask_url`).

`timeout_s` is also the socket read timeout, so blocking reads (XREAD BLOCK) must block for
less than it. A client that blocks longer (an RQ worker waits up to ~405 s in BLPOP) asks for
`blocking_reads`: no read timeout once connected (RQ then sets its own, just over its wait).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final
from urllib.parse import SplitResult, urlsplit

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from platform_core.embedded_redis import EmbeddedRedis
from platform_core.errors import AppError, ErrorCode
from platform_core.settings import RedisSettings

MASK: Final = "***"
_PASSWORD_PARAM = re.compile(r"(?i)([?&]password=)[^&#]*")

# After the first PING: 3 more tries, 50 ms growing to at most 0.5 s apart (jittered so
# many workers do not reconnect in lockstep); a restart of Redis takes about a second.
_STEADY_RETRIES: Final = 3
_STEADY_BACKOFF_BASE_S: Final = 0.05
_STEADY_BACKOFF_CAP_S: Final = 0.5
# Only a refused or dropped connection is retried (a restart). A timeout is not: a Redis that
# does not answer within timeout_s (frozen, overloaded) fails the call after timeout_s, where
# retrying it took 4 x timeout_s plus the backoff (~8.3 s at the default 2 s).
_RETRIED: Final = (redis.exceptions.ConnectionError,)


def mask_url(url: str) -> str:
    """`url` with the password (userinfo or `?password=` query) replaced by `***`; the rest is
    kept character for character."""
    parts = _split(url)
    if parts is None:
        return MASK  # unparseable (e.g. a broken IPv6 host): show nothing rather than a secret
    if parts.password is not None:
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        username = userinfo.partition(":")[0]
        url = url.replace(parts.netloc, f"{username}:{MASK}@{hostinfo}", 1)
    return _PASSWORD_PARAM.sub(rf"\1{MASK}", url)


def connect(url: str, *, timeout_s: float = 2.0, blocking_reads: bool = False) -> redis.Redis:
    """A client for `url` that has answered PING; REDIS_UNAVAILABLE if it does not. With
    `blocking_reads`, its reads have no timeout; connecting and the PING still do."""
    client = _pinged(url, timeout_s)
    if not blocking_reads:
        return client
    # the pool would reuse the PING's connection, which reads with timeout_s: start afresh
    client.close()
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=None,
        retry=Retry(_steady_backoff(), _STEADY_RETRIES, supported_errors=_RETRIED),
    )


def connect_configured(settings: RedisSettings) -> redis.Redis:
    """A client for the configured Redis, never the embedded one: for health checks, which
    ask Redis about a running service (starting a Redis for that would answer nothing).
    CONFIG_INVALID when no Redis is configured."""
    if settings.url is None:
        raise AppError(ErrorCode.CONFIG_INVALID, "REDIS_URL is not set; nothing to check")
    return connect(settings.url.get_secret_value(), timeout_s=settings.connect_timeout_s)


def _pinged(url: str, timeout_s: float) -> redis.Redis:
    try:
        # one attempt: an unreachable Redis fails within timeout_s
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise _invalid(url, exc) from exc
    try:
        client.ping()
    except RedisError as exc:
        client.close()
        raise _unavailable(url, timeout_s, exc) from exc
    client.set_retry(Retry(_steady_backoff(), _STEADY_RETRIES, supported_errors=_RETRIED))
    return client


async def connect_async(url: str, *, timeout_s: float = 2.0) -> redis.asyncio.Redis:
    """The asyncio twin of `connect`."""
    try:
        client = redis.asyncio.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=AsyncRetry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise _invalid(url, exc) from exc
    try:
        await client.ping()
    except RedisError as exc:
        await client.aclose()
        raise _unavailable(url, timeout_s, exc) from exc
    client.set_retry(AsyncRetry(_steady_backoff(), _STEADY_RETRIES, supported_errors=_RETRIED))
    return client


def resolve_redis_url(url: str | None, data_root: Path) -> tuple[str, EmbeddedRedis | None]:
    """`url` itself when configured (an empty string counts as unset); otherwise the URL of
    the embedded Redis of `data_root`, acquired: the caller must `release()` the returned
    EmbeddedRedis when done. For callers that hand a URL on (RQ workers, subprocesses)."""
    if url:
        return url, None
    embedded = EmbeddedRedis(data_root)
    return embedded.acquire(), embedded


@contextmanager
def open_redis(
    url: str | None, data_root: Path, *, timeout_s: float = 2.0, blocking_reads: bool = False
) -> Iterator[redis.Redis]:
    """A connected client for the configured Redis, or for the embedded one when `url` is
    unset (released on exit: the last holder's release stops it)."""
    resolved, embedded = resolve_redis_url(url, data_root)
    try:
        client = connect(resolved, timeout_s=timeout_s, blocking_reads=blocking_reads)
        try:
            yield client
        finally:
            client.close()
    finally:
        if embedded is not None:
            embedded.release()


def _steady_backoff() -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(base=_STEADY_BACKOFF_BASE_S, cap=_STEADY_BACKOFF_CAP_S)


def _invalid(url: str, exc: ValueError) -> AppError:
    return AppError(ErrorCode.CONFIG_INVALID, f"invalid Redis URL {mask_url(url)}: {exc}")


def _unavailable(url: str, timeout_s: float, exc: RedisError) -> AppError:
    parts = _split(url)
    password = parts.password if parts is not None else None
    # redis-py's messages name host and port only; masking anyway costs nothing
    detail = str(exc).replace(password, MASK) if password else str(exc)
    return AppError(
        ErrorCode.REDIS_UNAVAILABLE,
        f"Redis at {mask_url(url)} did not answer PING (timeout {timeout_s}s): "
        f"{type(exc).__name__}: {detail}; check REDIS_URL, or unset it to use the "
        "embedded Redis",
    )


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url)
    except ValueError:
        return None
