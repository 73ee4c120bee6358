"""What Redis knows of a run right now (status, message, heartbeat, progress, meta), read for
any number of runs by one Lua script: one round trip and one reply to parse.

`LiveStateReader` serves the handlers that run on the event loop (`GET /runs/{id}`, the most
polled route). A read that arrives while another batch is on its way to Redis waits for it
and then goes with the others that arrived meanwhile, as one script call; a lone read goes at
the loop's next turn. Under many concurrent polls one round trip then carries many runs, and
a round trip through the asyncio client is most of what a poll costs the API (see
docs/benchmarks.md). ioredis calls the same idea auto-pipelining.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

import redis
import redis.asyncio

from platform_core.api_models import RunStatusName
from platform_core.errors import AppError, ErrorCode
from platform_core.events import JobKind
from platform_core.run_state import (
    heartbeat_key,
    message_key,
    meta_key,
    progress_key,
    status_key,
)

KINDS: dict[str, JobKind] = {kind: kind for kind in get_args(JobKind)}
STATUSES: dict[str, RunStatusName] = {status: status for status in get_args(RunStatusName)}
# most runs one script call reads: bounds the reply a batch waits for
MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class LiveState:
    """A run's keys in Redis, decoded; all None / empty for a run Redis does not know."""

    status: RunStatusName | None
    message: str | None
    heartbeat: float | None
    progress: dict[str, str]
    meta: dict[str, str]

    @property
    def kind(self) -> JobKind | None:
        return KINDS.get(self.meta.get("kind", ""))


# five keys per run; a missing key answers false (nil to the client), a hash a flat list
_LIVE_LUA = """
local out = {}
for i = 1, #KEYS, 5 do
  out[#out + 1] = redis.call('GET', KEYS[i])
  out[#out + 1] = redis.call('GET', KEYS[i + 1])
  out[#out + 1] = redis.call('GET', KEYS[i + 2])
  out[#out + 1] = redis.call('HGETALL', KEYS[i + 3])
  out[#out + 1] = redis.call('HGETALL', KEYS[i + 4])
end
return out
"""
_PER_RUN = 5


def _keys(run_ids: Sequence[str]) -> list[str]:
    return [
        key
        for run_id in run_ids
        for key in (
            status_key(run_id),
            message_key(run_id),
            heartbeat_key(run_id),
            progress_key(run_id),
            meta_key(run_id),
        )
    ]


def live_states(client: redis.Redis, run_ids: Sequence[str]) -> list[LiveState]:
    """The live state of each of `run_ids`, in order, in one round trip."""
    if not run_ids:
        return []
    script = client.register_script(_LIVE_LUA)  # EVALSHA, loading the script when missing
    return _decode(script(keys=_keys(run_ids)), len(run_ids))


def live_state(client: redis.Redis, run_id: str) -> LiveState:
    return live_states(client, [run_id])[0]


class LiveStateReader:
    """Live state for handlers on the event loop, concurrent reads sent together (see the
    module's docstring). One per app and event loop."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._script = client.register_script(_LIVE_LUA)
        self._waiting: list[tuple[str, asyncio.Future[LiveState]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def read(self, run_id: str) -> LiveState:
        future: asyncio.Future[LiveState] = asyncio.get_running_loop().create_future()
        self._waiting.append((run_id, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all())
        return await future

    async def aclose(self) -> None:
        """Stops sending: a batch on its way is abandoned and its reads, like those waiting,
        are cancelled. For the app's shutdown, once it serves no more requests."""
        sender = self._sender
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        self._cancel_waiting()  # a sender cancelled before it ran never reached its finally

    async def _send_all(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:MAX_BATCH]
                del self._waiting[:MAX_BATCH]
                await self._send(batch)
        finally:
            self._sender = None
            self._cancel_waiting()  # only left when cancelled: nobody would send them

    def _cancel_waiting(self) -> None:
        for _, future in self._waiting:
            future.cancel()
        self._waiting.clear()

    async def _send(self, batch: list[tuple[str, asyncio.Future[LiveState]]]) -> None:
        wanted = [(run_id, future) for run_id, future in batch if not future.done()]
        if not wanted:  # every asker left (a client that disconnected)
            return
        try:
            states = _decode(
                await self._script(keys=_keys([run_id for run_id, _ in wanted])), len(wanted)
            )
        except Exception as error:  # each asker's handler raises it, as it would its own
            for _, future in wanted:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException:  # cancelled mid-flight: the askers must not wait forever
            for _, future in wanted:
                future.cancel()
            raise
        for (_, future), state in zip(wanted, states, strict=True):
            if not future.done():
                future.set_result(state)


def _decode(answers: object, runs: int) -> list[LiveState]:
    if not isinstance(answers, list) or len(answers) != _PER_RUN * runs:
        raise AppError(ErrorCode.INTERNAL, "unexpected reply to the run state script")
    per_run = zip(*[iter(answers)] * _PER_RUN, strict=True)  # the flat reply, five at a time
    return [
        LiveState(
            status=STATUSES.get(text(status) or ""),
            message=text(message),
            heartbeat=number(text(heartbeat)),
            progress=_pairs(progress),
            meta=_pairs(meta),
        )
        for status, message, heartbeat, progress, meta in per_run
    ]


def text(raw: object) -> str | None:
    """A Redis reply as text (None for nil and anything that is not a string)."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return raw if isinstance(raw, str) else None


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def number(found: str | None) -> float | None:
    """A number Redis holds as text; None when absent, unparsable or not finite."""
    try:
        return finite(float(found)) if found is not None else None
    except ValueError:
        return None


def integer(found: str | None) -> int | None:
    value = number(found)
    return None if value is None else int(value)


def _pairs(flat: object) -> dict[str, str]:
    """A hash as Lua returns it, [field, value, field, value, ...], decoded."""
    if not isinstance(flat, list):
        return {}
    pairs = ((text(k), text(v)) for k, v in zip(flat[::2], flat[1::2], strict=True))
    return {k: v for k, v in pairs if k is not None and v is not None}
