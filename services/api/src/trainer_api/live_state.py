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
import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from platform_core.errors import AppError, ErrorCode
from platform_core.events import JobKind
from platform_core.run_state import (
    RunStatus,
    heartbeat_key,
    message_key,
    meta_key,
    progress_key,
    status_key,
)

KINDS: dict[str, JobKind] = {kind: kind for kind in get_args(JobKind)}
STATUSES: dict[str, RunStatus] = {status.value: status for status in RunStatus}
# most runs one script call reads: bounds the reply a batch waits for
MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class LiveState:
    """A run's keys in Redis, decoded; all None / empty for a run Redis does not know."""

    status: RunStatus | None
    message: str | None
    heartbeat: float | None
    progress: dict[str, str]
    meta: dict[str, str]

    @property
    def kind(self) -> JobKind | None:
        return KINDS.get(self.meta.get("kind", ""))


# five keys per run; a missing key answers false (nil to the client), a hash a flat list.
# pcall: a key of the wrong type fails its own run's read (an error in its place), not the
# whole batch of other requests' runs
_LIVE_LUA = """
local out = {}
for i = 1, #KEYS, 5 do
  out[#out + 1] = redis.pcall('GET', KEYS[i])
  out[#out + 1] = redis.pcall('GET', KEYS[i + 1])
  out[#out + 1] = redis.pcall('GET', KEYS[i + 2])
  out[#out + 1] = redis.pcall('HGETALL', KEYS[i + 3])
  out[#out + 1] = redis.pcall('HGETALL', KEYS[i + 4])
end
return out
"""
_PER_RUN = 5
# failures that every read waiting for the same Redis would meet as well
_OUTAGES = (RedisConnectionError, RedisTimeoutError)


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
    """The live state of each of `run_ids`, in order, in one round trip; INTERNAL when a run's
    keys hold the wrong types."""
    if not run_ids:
        return []
    script = client.register_script(_LIVE_LUA)  # EVALSHA, loading the script when missing
    found: list[LiveState] = []
    for state in _decode(script(keys=_keys(run_ids)), run_ids):
        if isinstance(state, AppError):
            raise state
        found.append(state)
    return found


def live_state(client: redis.Redis, run_id: str) -> LiveState:
    return live_states(client, [run_id])[0]


Waiter = tuple[str, "asyncio.Future[LiveState]"]


class LiveStateReader:
    """Live state for handlers on the event loop, concurrent reads sent together (see the
    module's docstring). One per app and event loop."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._script = client.register_script(_LIVE_LUA)
        self._waiting: list[Waiter] = []
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    async def read(self, run_id: str) -> LiveState:
        if self._closed:
            raise _shutting_down()
        future: asyncio.Future[LiveState] = asyncio.get_running_loop().create_future()
        self._waiting.append((run_id, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all())
        return await future

    async def aclose(self) -> None:
        """Stops sending, for the app's shutdown: reads on their way or waiting, and any read
        asked for later, fail with REDIS_UNAVAILABLE."""
        self._closed = True
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        # a sender cancelled before it first ran never reached its `finally`
        _fail(self._take_waiting(), _shutting_down())

    async def _send_all(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:MAX_BATCH]
                del self._waiting[:MAX_BATCH]
                await self._send(batch)
        finally:
            if self._sender is asyncio.current_task():
                self._sender = None
            _fail(self._take_waiting(), _shutting_down())  # left only when cancelled

    async def _send(self, batch: list[Waiter]) -> None:
        wanted = [(run_id, future) for run_id, future in batch if not future.done()]
        if not wanted:  # every asker left (a client that disconnected)
            return
        run_ids = [run_id for run_id, _ in wanted]
        try:
            found = _decode(await self._script(keys=_keys(run_ids)), run_ids)
        except Exception as error:  # each asker's handler raises it, as it would its own
            _fail(wanted, error)
            if isinstance(error, _OUTAGES):  # the reads still waiting would meet it too
                _fail(self._take_waiting(), error)
            return
        except BaseException:  # cancelled on its way: its askers must not wait forever
            _fail(wanted, _shutting_down())
            raise
        for (_, future), state in zip(wanted, found, strict=True):
            if future.done():
                continue
            if isinstance(state, LiveState):
                future.set_result(state)
            else:
                future.set_exception(state)

    def _take_waiting(self) -> list[Waiter]:
        taken, self._waiting = self._waiting, []
        return taken


def _fail(waiters: list[Waiter], error: Exception) -> None:
    """Each waiting asker gets its own copy of `error` (concurrent handlers must not share one
    exception's traceback) where the copy is known to work: ours and redis-py's rebuild from
    their arguments; anything else is shared rather than risk a copy that raises, which would
    leave the askers waiting."""
    copyable = isinstance(error, AppError | RedisError)
    for _, future in waiters:
        if not future.done():
            future.set_exception(copy.copy(error) if copyable else error)


def _shutting_down() -> AppError:
    return AppError(ErrorCode.REDIS_UNAVAILABLE, "the API is shutting down")


def _decode(answers: object, run_ids: Sequence[str]) -> list[LiveState | AppError]:
    """The script's flat reply, five values a run, as each run's state, or INTERNAL for a run
    whose keys hold the wrong types (Redis answered an error in their place)."""
    if not isinstance(answers, list) or len(answers) != _PER_RUN * len(run_ids):
        raise AppError(ErrorCode.INTERNAL, "unexpected reply to the run state script")
    per_run = zip(*[iter(answers)] * _PER_RUN, strict=True)
    return [_state(run_id, values) for run_id, values in zip(run_ids, per_run, strict=True)]


def _state(run_id: str, values: tuple[object, ...]) -> LiveState | AppError:
    if any(isinstance(value, Exception) for value in values):
        return AppError(ErrorCode.INTERNAL, f"run {run_id}'s keys in Redis hold the wrong types")
    status, message, heartbeat, progress, meta = values
    return LiveState(
        status=STATUSES.get(text(status) or ""),
        message=text(message),
        heartbeat=number(text(heartbeat)),
        progress=_pairs(progress),
        meta=_pairs(meta),
    )


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
