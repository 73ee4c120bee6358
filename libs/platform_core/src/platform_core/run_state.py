"""Live run state in Redis, shared by the worker (writer) and the API and bot (readers).

Keys: `runs:status:<id>` (a RunStatus), `runs:hb:<id>` (last heartbeat,
UNIX seconds), `runs:<id>:cancelled` (cancel flag), `runs:msg:<id>` (a human-readable
message), plus `runs:progress:<id>` (a hash with the latest progress figures) and the sorted set
`runs:index` (run ids by creation time) so listings need no scan, and `runs:job:<id>` (the RQ
job id of the current attempt), `runs:meta:<id>` (kind, user id, creation time) and
`runs:spec:<id>` (the JSON spec, for resuming after a crash). The source of truth for a
finished run is its manifest.json on disk; these keys are the live view. Status changes, meta
and cancel requests keep the indexes of `run_index.py` (by status, kind and owner; pending
cancellations) in step, in the same Redis step.
"""

from __future__ import annotations

import time
from enum import StrEnum

import redis
from redis.typing import EncodableT, FieldT

from platform_core import run_index
from platform_core.errors import AppError, ErrorCode
from platform_core.run_index import MoveOutcome, RunPage, StatusMove

INDEX_KEY = run_index.INDEX_KEY


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PRUNED = "pruned"  # a study trial its pruner stopped early: ended as designed, not failed

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PRUNED}
)

# Which transitions the worker may make; anything else is a bug or a race we refuse.
_ALLOWED: dict[RunStatus | None, frozenset[RunStatus]] = {
    None: frozenset({RunStatus.QUEUED, RunStatus.RUNNING}),
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED}),
    # running -> queued: a transient failure re-enqueued, or a dead worker's run resumed
    RunStatus.RUNNING: frozenset(
        {
            RunStatus.COMPLETED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.PRUNED,
            RunStatus.QUEUED,
        }
    ),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset({RunStatus.QUEUED}),  # an operator's retry
    RunStatus.CANCELLED: frozenset(),
    RunStatus.PRUNED: frozenset(),
}


def status_key(run_id: str) -> str:
    return f"runs:status:{run_id}"


def heartbeat_key(run_id: str) -> str:
    return f"runs:hb:{run_id}"


def cancel_key(run_id: str) -> str:
    return f"runs:{run_id}:cancelled"


def message_key(run_id: str) -> str:
    return f"runs:msg:{run_id}"


def progress_key(run_id: str) -> str:
    return f"runs:progress:{run_id}"


def job_key(run_id: str) -> str:
    return f"runs:job:{run_id}"


def meta_key(run_id: str) -> str:
    return f"runs:meta:{run_id}"


def spec_key(run_id: str) -> str:
    return f"runs:spec:{run_id}"


def attempts_key(run_id: str) -> str:
    return f"runs:attempts:{run_id}"


def published_key(run_id: str) -> str:
    return f"runs:published:{run_id}"


# raise the mark only: a resumed or repeated attempt never moves it back
_RAISE_MARK = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
local step = tonumber(ARGV[1])
if step > current then redis.call('SET', KEYS[1], ARGV[1]) return step end
return current
"""


class RunStateStore:
    """Synchronous access to run state (the worker and the CLI)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def status(self, run_id: str) -> RunStatus | None:
        raw = self.client.get(status_key(run_id))
        return None if raw is None else RunStatus(_text(raw))

    def set_status(self, run_id: str, status: RunStatus, *, message: str | None = None) -> None:
        """Move a run to `status`; CONFLICT when the transition is not allowed. The check and
        the move (status, indexes, message) are one step, so racing writers cannot both pass."""
        allowed = [before for before in _ALLOWED if before is status or status in _ALLOWED[before]]
        move = StatusMove(status.value, status.is_terminal, message)
        outcome, before = run_index.move_status(self.client, run_id, move, allowed_from=allowed)
        if outcome != "moved":
            raise AppError(
                ErrorCode.CONFLICT, f"run {run_id} cannot go from {before or 'unknown'} to {status}"
            )

    def move(
        self,
        run_id: str,
        status: RunStatus,
        *,
        expected: RunStatus,
        message: str | None = None,
        cancelled_instead: str | None = None,
    ) -> MoveOutcome:
        """Move a run to `status` only if it is still `expected` (compare and set): "moved",
        or "conflict" (it is no longer `expected`, or may not go to `status`). With
        `cancelled_instead` (a message), a run whose cancellation is pending goes to cancelled
        with that message instead, in the same step: "moved_instead"."""
        allowed = [expected] if status is expected or status in _ALLOWED[expected] else []
        instead = None
        if cancelled_instead is not None:
            instead = StatusMove(RunStatus.CANCELLED.value, True, cancelled_instead)
        outcome, _ = run_index.move_status(
            self.client,
            run_id,
            StatusMove(status.value, status.is_terminal, message),
            allowed_from=allowed,
            if_cancel_requested=instead,
        )
        return outcome

    def message(self, run_id: str) -> str | None:
        raw = self.client.get(message_key(run_id))
        return None if raw is None else _text(raw)

    def beat(self, run_id: str, *, now: float | None = None) -> None:
        self.client.set(heartbeat_key(run_id), f"{time.time() if now is None else now:.3f}")

    def last_heartbeat(self, run_id: str) -> float | None:
        raw = self.client.get(heartbeat_key(run_id))
        return None if raw is None else float(_text(raw))

    def request_cancel(self, run_id: str, *, now: float | None = None) -> None:
        """Raise the cooperative flag; its value is when it was raised (for the grace period).
        The run joins the pending cancellations until the flag is cleared or the run ends."""
        asked = time.time() if now is None else now
        pipe = self.client.pipeline()
        pipe.set(cancel_key(run_id), f"{asked:.3f}")
        pipe.zadd(run_index.PENDING_CANCEL_KEY, {run_id: asked})
        pipe.execute()

    def cancel_requested_at(self, run_id: str) -> float | None:
        raw = self.client.get(cancel_key(run_id))
        return None if raw is None else float(_text(raw))

    def cancel_requests(self) -> list[str]:
        """Run ids whose cancellation is pending (asked for; not cleared, the run not ended)."""
        raw = self.client.zrange(run_index.PENDING_CANCEL_KEY, 0, -1)
        return sorted(_text(r) for r in raw if isinstance(r, bytes | str))

    def due_cancellations(
        self, *, older_than_s: float, now: float | None = None
    ) -> list[tuple[str, float]]:
        """Pending cancellations asked for `older_than_s` ago or earlier, as (run id, when
        asked), oldest first: the sweep's whole read, one round trip."""
        cutoff = (time.time() if now is None else now) - older_than_s
        ended = [status.value for status in _TERMINAL]
        return run_index.due_cancellations(self.client, cutoff=cutoff, ended=ended)

    def set_job_id(self, run_id: str, job_id: str) -> None:
        self.client.set(job_key(run_id), job_id)

    def job_id(self, run_id: str) -> str | None:
        """The RQ job id of the run's current attempt."""
        raw = self.client.get(job_key(run_id))
        return None if raw is None else _text(raw)

    def set_meta(self, run_id: str, *, kind: str, user_id: int | None, spec_json: str) -> None:
        """What the run is (kind, who asked, when) and its spec, kept so that any process can
        describe it and a worker can resume it after a crash."""
        run_index.record_meta(self.client, run_id, kind=kind, user_id=user_id, spec_json=spec_json)

    def meta(self, run_id: str) -> dict[str, str]:
        raw = self.client.hgetall(meta_key(run_id))
        return {_text(k): _text(v) for k, v in raw.items()}

    def spec_json(self, run_id: str) -> str | None:
        raw = self.client.get(spec_key(run_id))
        return None if raw is None else _text(raw)

    def clear_cancel(self, run_id: str) -> None:
        pipe = self.client.pipeline()
        pipe.delete(cancel_key(run_id))
        pipe.zrem(run_index.PENDING_CANCEL_KEY, run_id)
        pipe.execute()

    def cancel_requested(self, run_id: str) -> bool:
        return bool(self.client.exists(cancel_key(run_id)))

    def set_progress(self, run_id: str, figures: dict[FieldT, EncodableT]) -> None:
        self.client.hset(progress_key(run_id), mapping=figures)

    def progress(self, run_id: str) -> dict[str, str]:
        raw = self.client.hgetall(progress_key(run_id))
        return {_text(k): _text(v) for k, v in raw.items()}

    def recent(self, limit: int = 20, offset: int = 0) -> list[str]:
        """Run ids, newest first."""
        raw = self.client.zrevrange(INDEX_KEY, offset, offset + limit - 1)
        return [_text(r) for r in raw if isinstance(r, bytes | str)]

    def next_attempt(self, run_id: str) -> int:
        """Count one more attempt of the run and return its number (1 for the first): every
        attempt, whether RQ retried it or a sweep requeued it, counts once."""
        return int(self.client.incr(attempts_key(run_id)))

    def attempts(self, run_id: str) -> int:
        raw = self.client.get(attempts_key(run_id))
        return 0 if raw is None else int(_text(raw))

    def published_step(self, run_id: str) -> int:
        """The last training step whose figures the run published (-1 before any): a later
        attempt repeating steps publishes nothing at or below it."""
        raw = self.client.get(published_key(run_id))
        return -1 if raw is None else int(_text(raw))

    def mark_published(self, run_id: str, step: int) -> int:
        """Raise the published mark to `step` (never lower it); the mark after the call."""
        return int(self.client.eval(_RAISE_MARK, 1, published_key(run_id), step))

    def page(
        self,
        *,
        status: RunStatus | None = None,
        kind: str | None = None,
        user_id: int | None = None,
        offset: int = 0,
        limit: int = 20,
    ) -> RunPage:
        """Run ids with every value given, newest first, and their total: one index read."""
        return run_index.page(
            self.client, status=status, kind=kind, user_id=user_id, offset=offset, limit=limit
        )

    def stale_running(self, *, older_than_s: float, now: float | None = None) -> list[str]:
        """Runs marked running whose heartbeat is older than `older_than_s` (or missing):
        their worker died. Reads only the running runs, in one round trip."""
        cutoff = (time.time() if now is None else now) - older_than_s
        return run_index.stale_running(self.client, cutoff=cutoff)

    def ensure_indexes(self) -> bool:
        """Build the run indexes from existing keys, once per layout version (at start-up of
        the API and of each worker); whether this call built them."""
        return run_index.ensure_indexes(self.client, ended=[s.value for s in _TERMINAL])


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes) else raw
