"""Indexes of runs in Redis, so that a listing or a sweep costs what it returns, not what
every run ever made adds up to.

Every run is in `runs:index` (all runs, score: creation time) and, with the same score, in one
sorted set for each combination of its status, kind and owner: `runs:index:status:running`,
`runs:index:kind:train_model`, `runs:index:user:7`, `runs:index:status:running:user:7`, ...
up to seven sets for a run whose meta names a kind and an owner. Each filter `GET /runs` takes
(none, one, two or all three of status, kind and owner) is then one sorted set read a page at a
time, with an exact total from ZCARD. Intersecting at read time instead (ZINTERSTORE, or
walking the most selective set and checking each member) costs what the smaller set holds,
which is every run an owner ever made, or every completed run; the price of the combined sets
is memory, about 100 bytes a set entry.

`runs:cancel:pending` holds the runs whose cancellation was asked for and has not ended them
(score: when it was asked), so the cancellation sweep reads only those.

The scripts move a run between its sets in the same script that changes its status or meta
(Redis runs a script alone), so no reader sees a run in two status sets or in none, and the
check of a transition and the transition are one step. They compute key names from a run's
id and meta, so they need one Redis (not a cluster), as RQ does.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final, Literal

import redis
from redis.typing import EncodableT

INDEX_KEY: Final = "runs:index"
PENDING_CANCEL_KEY: Final = "runs:cancel:pending"
# the indexes' layout; a process that finds another version (or none) builds them once
INDEX_VERSION_KEY: Final = "runs:index-version"
INDEX_VERSION: Final = "2"
MIGRATION_LOCK_KEY: Final = "runs:index-migration"
MIGRATION_BATCH = 1000  # runs per script call: one call blocks Redis for a few ms at most
MIGRATION_LOCK_TTL_S = 60.0  # renewed after every batch; a migrator that died frees it
_log = logging.getLogger(__name__)


def index_key(
    *, status: str | None = None, kind: str | None = None, user_id: int | str | None = None
) -> str:
    """The sorted set of the runs that have every one of the values given (all runs: none)."""
    parts = [INDEX_KEY]
    for name, value in (("status", status), ("kind", kind), ("user", user_id)):
        if value is not None:
            parts.append(f"{name}:{value}")
    return ":".join(parts)


# index_keys(status, kind, user): the sets a run with those values is in, as index_key names
# them (a false value: the run has none of that dimension); move(...) takes a run out of the
# sets of its old values and puts it in those of its new ones, with `score`
_COMMON_LUA = """
local function index_keys(status, kind, user)
  -- every subset of the dimensions, each in the order status, kind, user
  local keys = {'runs:index'}
  local dims = {status and ':status:' .. status, kind and ':kind:' .. kind,
                user and ':user:' .. user}
  for d = 1, 3 do  -- not ipairs: a dimension the run lacks is false, a hole
    local dim = dims[d]
    if dim then
      local n = #keys
      for i = 1, n do keys[n + i] = keys[i] .. dim end
    end
  end
  table.remove(keys, 1)  -- runs:index itself is kept by created()
  return keys
end

local function move(id, old, new, score)
  if old then
    for _, key in ipairs(index_keys(old[1], old[2], old[3])) do redis.call('ZREM', key, id) end
  end
  for _, key in ipairs(index_keys(new[1], new[2], new[3])) do redis.call('ZADD', key, score, id) end
end

local function created(id, fallback)
  local score = redis.call('ZSCORE', 'runs:index', id)
  if not score then
    score = fallback
    redis.call('ZADD', 'runs:index', score, id)
  end
  return score
end
"""

# ARGV: run id, now, then the move: new status, message, '1' when a message is given, '1'
# when the status ends the run; then the move to make instead when a cancellation of the run
# is pending (the same four; an empty status: none); then every status the run may be in for
# the move ('' for none). Answers {outcome, the status before ('' for none)}.
_TRANSITION_LUA = (
    _COMMON_LUA
    + """
local id = ARGV[1]
local current = redis.call('GET', 'runs:status:' .. id)
local before = current or ''
local allowed = false
for i = 11, #ARGV do
  if ARGV[i] == before then allowed = true end
end
if not allowed then return {'conflict', before} end
local outcome, first = 'moved', 3
if ARGV[7] ~= '' and redis.call('ZSCORE', 'runs:cancel:pending', id) then
  outcome, first = 'moved_instead', 7
end
local status = ARGV[first]
local meta = redis.call('HMGET', 'runs:meta:' .. id, 'kind', 'user_id')
local old = nil
if current then old = {current, meta[1], meta[2]} end
move(id, old, {status, meta[1], meta[2]}, created(id, ARGV[2]))
redis.call('SET', 'runs:status:' .. id, status)
if ARGV[first + 2] == '1' then redis.call('SET', 'runs:msg:' .. id, ARGV[first + 1]) end
if ARGV[first + 3] == '1' then redis.call('ZREM', 'runs:cancel:pending', id) end
return {outcome, before}
"""
)

# ARGV: run id, kind, owner ('' to keep the one recorded), creation time, spec JSON
_META_LUA = (
    _COMMON_LUA
    + """
local id, kind, user, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local meta_key = 'runs:meta:' .. id
local old = redis.call('HMGET', meta_key, 'kind', 'user_id')
if user == '' then user = old[2] end
local status = redis.call('GET', 'runs:status:' .. id)
move(id, {status, old[1], old[2]}, {status, kind, user}, created(id, now))
redis.call('HSET', meta_key, 'kind', kind, 'created_at', now)
if user then redis.call('HSET', meta_key, 'user_id', user) end
redis.call('SET', 'runs:spec:' .. id, ARGV[5])
return 1
"""
)

# KEYS[1]: the running set. ARGV[1]: the cutoff. The running runs whose heartbeat is older
# than the cutoff, or missing.
_STALE_LUA = """
local cutoff = tonumber(ARGV[1])
local stale = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local beat = redis.call('GET', 'runs:hb:' .. id)
  if not beat or tonumber(beat) < cutoff then stale[#stale + 1] = id end
end
return stale
"""

# KEYS[1]: the pending cancellations. ARGV[1]: the cutoff, then the statuses that end a run.
# Pending cancellations asked for before the cutoff, as id, time pairs; one whose run has
# ended meanwhile (a request that raced the end) is dropped from the set instead.
_DUE_CANCELS_LUA = """
local ended = {}
for i = 2, #ARGV do ended[ARGV[i]] = true end
local due = {}
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES')
for i = 1, #found, 2 do
  local status = redis.call('GET', 'runs:status:' .. found[i])
  if status and ended[status] then
    redis.call('ZREM', KEYS[1], found[i])
  else
    due[#due + 1] = found[i]
    due[#due + 1] = found[i + 1]
  end
end
return due
"""

# ARGV: now, the count of statuses that end a run, those statuses, then run ids. Puts each run
# in the sets of its current values (the score: its place in runs:index, else its recorded
# creation time, else now) and a raised cancel flag of a run not ended in the pending set.
# Adding is idempotent, so a migration that died half-way is simply run again.
_MIGRATE_LUA = (
    _COMMON_LUA
    + """
local now, n_ended = ARGV[1], tonumber(ARGV[2])
local ended = {}
for i = 3, 2 + n_ended do ended[ARGV[i]] = true end
for i = 3 + n_ended, #ARGV do
  local id = ARGV[i]
  local status = redis.call('GET', 'runs:status:' .. id)
  if status then
    local meta = redis.call('HMGET', 'runs:meta:' .. id, 'kind', 'user_id', 'created_at')
    move(id, nil, {status, meta[1], meta[2]}, created(id, meta[3] or now))
    local asked = redis.call('GET', 'runs:' .. id .. ':cancelled')
    if asked and not ended[status] then
      redis.call('ZADD', 'runs:cancel:pending', asked, id)
    end
  end
end
return 1
"""
)


# KEYS: the version marker, the migration lock. ARGV: the version, a token, the lock's TTL (ms)
_CLAIM_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 'built' end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 'mine' end
return 'wait'
"""

# compare-and-renew: the builder keeps its lock while it works, unless it lost it
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# compare-and-delete: a lock is released only by its holder
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

MoveOutcome = Literal["moved", "moved_instead", "conflict"]
_OUTCOMES: dict[str, MoveOutcome] = {
    "moved": "moved",
    "moved_instead": "moved_instead",
    "conflict": "conflict",
}


@dataclass(frozen=True, slots=True)
class StatusMove:
    """A status to set, with the message to set beside it (None: leave the message)."""

    status: str
    ends_run: bool
    message: str | None = None

    def args(self) -> list[EncodableT]:
        has_message = self.message is not None
        return [self.status, self.message or "", "1" if has_message else "0", int(self.ends_run)]


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of an index, newest first, and how many runs the index holds."""

    run_ids: list[str]
    total: int


def move_status(
    client: redis.Redis,
    run_id: str,
    move: StatusMove,
    *,
    allowed_from: Collection[str | None],
    if_cancel_requested: StatusMove | None = None,
) -> tuple[MoveOutcome, str | None]:
    """Make `move` (or `if_cancel_requested`, when a cancellation of the run is pending) when
    the run's current status (None: it has none) is in `allowed_from`, moving it between its
    index sets in the same step; the outcome and the status before."""
    instead = if_cancel_requested.args() if if_cancel_requested else ["", "", "0", "0"]
    allowed = [before or "" for before in allowed_from]
    args = [run_id, f"{time.time():.6f}", *move.args(), *instead, *allowed]
    outcome, before = _texts(run_script(client, _TRANSITION_LUA, args=args))
    return _OUTCOMES[outcome], before or None


def record_meta(
    client: redis.Redis, run_id: str, *, kind: str, user_id: int | None, spec_json: str
) -> None:
    """Record the run's kind, owner (None: keep the recorded one), creation time and spec, and
    move it to the index sets of its new kind and owner."""
    user = "" if user_id is None else str(user_id)
    run_script(client, _META_LUA, args=[run_id, kind, user, f"{time.time():.3f}", spec_json])


def stale_running(client: redis.Redis, *, cutoff: float) -> list[str]:
    """Running runs whose last heartbeat is before `cutoff` or missing, in one round trip."""
    running = index_key(status="running")
    return _texts(run_script(client, _STALE_LUA, keys=[running], args=[f"{cutoff:.6f}"]))


def due_cancellations(
    client: redis.Redis, *, cutoff: float, ended: Collection[str]
) -> list[tuple[str, float]]:
    """Pending cancellations asked for at or before `cutoff`, as (run id, when asked), oldest
    first; a run that ended meanwhile is dropped from the pending set instead."""
    found = _texts(
        run_script(client, _DUE_CANCELS_LUA, keys=[PENDING_CANCEL_KEY], args=[cutoff, *ended])
    )
    return [(found[i], float(found[i + 1])) for i in range(0, len(found), 2)]


def page(
    client: redis.Redis,
    *,
    status: str | None = None,
    kind: str | None = None,
    user_id: int | None = None,
    offset: int = 0,
    limit: int = 20,
) -> RunPage:
    """The runs with every value given, newest first, `limit` from `offset`, with their total."""
    key = index_key(status=status, kind=kind, user_id=user_id)
    pipe = client.pipeline()  # MULTI: the page and the total from one moment
    pipe.zrevrange(key, offset, offset + limit - 1)
    pipe.zcard(key)
    ids, total = pipe.execute()
    return RunPage(run_ids=_texts(ids), total=int(total))


def ensure_indexes(client: redis.Redis, *, ended: Collection[str], poll_s: float = 0.05) -> bool:
    """Build the indexes from the runs' keys unless this layout's version is recorded (once:
    each process calls this at start-up). Of processes starting together one builds them under
    a lock and the others wait until it recorded the version (or its lock expired: it died,
    and one of them builds instead). Returns whether this call built them."""
    token = uuid.uuid4().hex
    while (claim := _claim_migration(client, token)) != "built":
        if claim == "wait":
            time.sleep(poll_s)
            continue
        started = time.monotonic()
        try:
            runs = _migrate(client, ended, token)
            client.set(INDEX_VERSION_KEY, INDEX_VERSION)
        finally:
            run_script(client, _RELEASE_LUA, keys=[MIGRATION_LOCK_KEY], args=[token])
        _log.info(
            "run indexes built",
            extra={
                "event": "run_index.migrated",
                "runs": runs,
                "version": INDEX_VERSION,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        return True
    return False


def _claim_migration(client: redis.Redis, token: str) -> str | None:
    """ "built", "mine" (this caller holds the lock now) or "wait"; one step, so a builder
    that finishes between a check of the version and a take of the lock cannot be missed."""
    lock_ms = int(MIGRATION_LOCK_TTL_S * 1000)
    keys = [INDEX_VERSION_KEY, MIGRATION_LOCK_KEY]
    return _text(run_script(client, _CLAIM_LUA, keys=keys, args=[INDEX_VERSION, token, lock_ms]))


def _migrate(client: redis.Redis, ended: Collection[str], token: str) -> int:
    prefix = "runs:status:"
    batch: list[str] = []
    runs = 0
    for key in client.scan_iter(match=f"{prefix}*", count=MIGRATION_BATCH):
        batch.append((_text(key) or "")[len(prefix) :])
        if len(batch) == MIGRATION_BATCH:
            runs += _migrate_batch(client, ended, token, batch)
            batch = []
    return runs + (_migrate_batch(client, ended, token, batch) if batch else 0)


def _migrate_batch(
    client: redis.Redis, ended: Collection[str], token: str, run_ids: list[str]
) -> int:
    args: list[EncodableT] = [f"{time.time():.3f}", len(ended), *ended, *run_ids]
    run_script(client, _MIGRATE_LUA, args=args)
    lock_ms = int(MIGRATION_LOCK_TTL_S * 1000)
    run_script(client, _RENEW_LUA, keys=[MIGRATION_LOCK_KEY], args=[token, lock_ms])
    return len(run_ids)


def run_script(
    client: redis.Redis, source: str, *, keys: Collection[str] = (), args: Iterable[EncodableT] = ()
) -> object:
    """Run `source` by EVALSHA (loading it when Redis lacks it)."""
    answer: object = client.register_script(source)(keys=list(keys), args=list(args))
    return answer


def _text(raw: object) -> str | None:
    if isinstance(raw, bytes):
        return raw.decode("utf-8")
    return raw if isinstance(raw, str) else None


def _texts(raw: object) -> list[str]:
    """A reply's list of bulk strings as text (a client may decode replies or not)."""
    items = raw if isinstance(raw, list) else []
    return [found for item in items if (found := _text(item)) is not None]
