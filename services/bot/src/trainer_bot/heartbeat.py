"""The bot's liveness record, stamped by the notifier's two loops as they go round and judged by
`python -m trainer_bot.healthcheck`.

A Redis hash `bot:heartbeat:<hostname>` (per host, like the worker's check: a container's
check is about the bot in that container) holds the wall-clock time each loop last went round
(`consume`, `deliver`) and whether the bot's session is `connected` (the Discord gateway, which
brings the commands; console mode has no session to lose). Each loop stamps its own field, so a
stuck loop shows even while the other one keeps going. The key expires `MAX_AGE_S` after the
last stamp: a bot that stopped leaves nothing behind.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping

import redis.asyncio
from redis.typing import EncodableT, FieldT

KEY_PREFIX = "bot:heartbeat:"
LOOPS = ("consume", "deliver")
# The longest pause a working loop makes between two rounds is discord.py's own sleep on a
# 429 (up to the client's 30 s max_ratelimit_timeout) plus the request itself; a loop silent
# for four times that is stuck.
MAX_AGE_S = 120


def heartbeat_key(hostname: str) -> str:
    return f"{KEY_PREFIX}{hostname}"


def always_connected() -> bool:
    """Console mode: no session that could drop."""
    return True


class Heartbeat:
    """Stamps `loop` at most once per `every_s`. `client` must not decode responses."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        every_s: float,
        connected: Callable[[], bool] = always_connected,
    ) -> None:
        self._client = client
        self._every_s = every_s
        self._connected = connected
        self._key = heartbeat_key(socket.gethostname())
        self._stamped: dict[str, float] = {}

    async def beat(self, loop: str) -> None:
        now = time.time()  # wall clock: another process reads it
        if now - self._stamped.get(loop, float("-inf")) < self._every_s:
            return
        self._stamped[loop] = now
        fields: dict[FieldT, EncodableT] = {
            loop: f"{now:.3f}",
            "connected": "1" if self._connected() else "0",
        }
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self._key, mapping=fields)
            pipe.expire(self._key, MAX_AGE_S)
            await pipe.execute()


def unhealthy_reason(
    fields: Mapping[bytes | str, bytes | str], now: float, max_age_s: float = MAX_AGE_S
) -> str | None:
    """Why the heartbeat `fields` (the hash as redis-py reads it) say that the bot does not
    work; None when they say it does."""
    if not fields:
        return "no heartbeat: the bot is not running on this host, or stopped stamping it"
    for loop in LOOPS:
        stamped = fields.get(loop.encode())
        if stamped is None:
            return f"the notifier's {loop} loop has not stamped the heartbeat yet"
        age_s = now - float(stamped)
        if age_s > max_age_s:
            return f"the notifier's {loop} loop has not gone round for {age_s:.0f}s"
    if fields.get(b"connected") != b"1":
        return "not connected to the Discord gateway"
    return None
