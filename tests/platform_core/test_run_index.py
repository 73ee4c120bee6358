"""The run indexes (by status, kind and owner; pending cancellations) against a real Redis:
they move with every change, stay whole under racing writers, are what the sweeps and the
listings read, and are built once from keys written before they existed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.typing import EncodableT, FieldT

from platform_core import run_index
from platform_core.errors import AppError
from platform_core.redis_connection import connect
from platform_core.run_index import INDEX_VERSION_KEY, MIGRATION_LOCK_KEY, index_key
from platform_core.run_state import RunStateStore, RunStatus

pytestmark = pytest.mark.integration


def sets_of(client: redis.Redis, run_id: str) -> set[str]:
    """Every index set that holds `run_id` (a test may scan; the code never does)."""
    found = set()
    for raw in client.scan_iter(match="runs:index*"):
        key = raw.decode()
        if client.type(key) == b"zset" and client.zscore(key, run_id) is not None:
            found.add(key)
    return found


def expected_sets(status: str | None, kind: str | None, user: int | None) -> set[str]:
    """The sets index_key names for every combination of the values a run has."""
    keys = {run_index.INDEX_KEY}
    for s in (None, status):
        for k in (None, kind):
            for u in (None, user):
                keys.add(index_key(status=s, kind=k, user_id=u))
    return keys


@pytest.fixture
def clients(redis_url: str, redis_client: redis.Redis) -> Iterator[Callable[[], redis.Redis]]:
    """Fresh connections for racing threads (one connection each, as separate processes)."""
    made: list[redis.Redis] = []

    def make() -> redis.Redis:
        made.append(connect(redis_url))
        return made[-1]

    yield make
    for client in made:
        client.close()


def test_index_keys_name_each_combination() -> None:
    assert index_key() == "runs:index"
    assert index_key(status="running") == "runs:index:status:running"
    assert index_key(kind="train_model", user_id=7) == "runs:index:kind:train_model:user:7"
    assert (
        index_key(status=RunStatus.FAILED, kind="train_tokenizer", user_id="3")
        == "runs:index:status:failed:kind:train_tokenizer:user:3"
    )


def test_indexes_move_with_each_transition_and_meta_change(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    store.set_status("r", RunStatus.QUEUED)  # the queue marks it before recording its meta
    assert sets_of(redis_client, "r") == expected_sets("queued", None, None)
    store.set_meta("r", kind="train_model", user_id=7, spec_json="{}")
    assert sets_of(redis_client, "r") == expected_sets("queued", "train_model", 7)
    created = redis_client.zscore("runs:index", "r")
    for status in (RunStatus.RUNNING, RunStatus.FAILED, RunStatus.QUEUED, RunStatus.RUNNING):
        store.set_status("r", status)
        assert sets_of(redis_client, "r") == expected_sets(status, "train_model", 7)
    # a meta without an owner keeps the recorded one; a new kind moves the kind sets
    store.set_meta("r", kind="train_tokenizer", user_id=None, spec_json="{}")
    assert store.meta("r")["user_id"] == "7"
    assert sets_of(redis_client, "r") == expected_sets("running", "train_tokenizer", 7)
    store.set_status("r", RunStatus.COMPLETED)
    assert sets_of(redis_client, "r") == expected_sets("completed", "train_tokenizer", 7)
    # every set keeps the creation time as the score, so each lists newest first
    assert {redis_client.zscore(key, "r") for key in sets_of(redis_client, "r")} == {created}


def test_a_refused_transition_moves_nothing(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    store.set_meta("r", kind="train_model", user_id=1, spec_json="{}")
    store.set_status("r", RunStatus.RUNNING)
    store.set_status("r", RunStatus.COMPLETED, message="done")
    with pytest.raises(AppError, match="cannot go from completed to running"):
        store.set_status("r", RunStatus.RUNNING, message="again")
    assert store.message("r") == "done"
    assert sets_of(redis_client, "r") == expected_sets("completed", "train_model", 1)


def test_racing_writers_leave_each_run_in_exactly_one_status_set(
    redis_client: redis.Redis, clients: Callable[[], redis.Redis]
) -> None:
    store = RunStateStore(redis_client)
    runs = [f"race-{i}" for i in range(40)]
    for run_id in runs:
        store.set_meta(run_id, kind="train_model", user_id=5, spec_json="{}")
        store.set_status(run_id, RunStatus.RUNNING)
    barrier = threading.Barrier(3)
    wins: dict[RunStatus, list[str]] = {RunStatus.COMPLETED: [], RunStatus.FAILED: []}

    def finish(target: RunStatus) -> None:
        mine = RunStateStore(clients())
        barrier.wait()
        for run_id in runs:  # completed and failed cannot follow each other: one must lose
            try:
                mine.set_status(run_id, target)
            except AppError:
                continue
            wins[target].append(run_id)

    def cancel() -> None:  # a compare and set from running: loses to whichever ended it
        mine = RunStateStore(clients())
        barrier.wait()
        for run_id in runs:
            mine.move(run_id, RunStatus.CANCELLED, expected=RunStatus.RUNNING)

    threads = [
        threading.Thread(target=finish, args=(RunStatus.COMPLETED,)),
        threading.Thread(target=finish, args=(RunStatus.FAILED,)),
        threading.Thread(target=cancel),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not set(wins[RunStatus.COMPLETED]) & set(wins[RunStatus.FAILED])
    for run_id in runs:
        status = store.status(run_id)
        assert status is not None and status.is_terminal
        assert sets_of(redis_client, run_id) == expected_sets(status, "train_model", 5)
    counts = sum(redis_client.zcard(index_key(status=s)) for s in RunStatus)
    assert counts == len(runs)


def test_compare_and_set_moves_once(
    redis_client: redis.Redis, clients: Callable[[], redis.Redis]
) -> None:
    store = RunStateStore(redis_client)
    store.set_status("r", RunStatus.RUNNING)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def move() -> None:
        mine = RunStateStore(clients())
        barrier.wait()
        outcomes.append(mine.move("r", RunStatus.CANCELLED, expected=RunStatus.RUNNING))

    threads = [threading.Thread(target=move) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["moved"]
    # a move the rules refuse is a conflict even from the expected status
    assert store.move("r", RunStatus.RUNNING, expected=RunStatus.CANCELLED) == "conflict"


def test_a_pending_cancellation_turns_a_move_into_cancelled(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    store.set_meta("r", kind="train_model", user_id=2, spec_json="{}")
    store.set_status("r", RunStatus.RUNNING)
    store.request_cancel("r")
    outcome = store.move(
        "r", RunStatus.QUEUED, expected=RunStatus.RUNNING, cancelled_instead="asked, worker gone"
    )
    assert outcome == "moved_instead"
    assert store.status("r") is RunStatus.CANCELLED
    assert store.message("r") == "asked, worker gone"
    assert store.cancel_requests() == []  # ended: no longer pending
    assert sets_of(redis_client, "r") == expected_sets("cancelled", "train_model", 2)

    store.set_status("s", RunStatus.RUNNING)
    store.request_cancel("s")
    store.clear_cancel("s")  # a cleared request no longer counts
    outcome = store.move("s", RunStatus.QUEUED, expected=RunStatus.RUNNING, cancelled_instead="x")
    assert outcome == "moved"
    assert store.status("s") is RunStatus.QUEUED


def test_stale_sweep_reads_only_the_running_set(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    store.set_status("indexed", RunStatus.RUNNING)
    store.set_status("done", RunStatus.RUNNING)
    store.set_status("done", RunStatus.COMPLETED)
    # a status key written behind the store's back is in no index: the sweep never looks
    redis_client.set("runs:status:unindexed", "running")
    assert store.stale_running(older_than_s=60) == ["indexed"]
    store.beat("indexed")
    assert store.stale_running(older_than_s=60) == []


def test_cancel_sweep_reads_only_pending_cancellations(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    for run_id in ("old", "recent", "ended", "raced"):
        store.set_status(run_id, RunStatus.RUNNING)
    store.request_cancel("old", now=100.0)
    store.request_cancel("recent", now=190.0)
    store.request_cancel("ended", now=100.0)
    store.set_status("ended", RunStatus.COMPLETED)  # an end drops its request
    store.set_status("raced", RunStatus.FAILED)
    store.request_cancel("raced", now=100.0)  # a request that arrived after the end
    redis_client.set("runs:flag-only:cancelled", "100.0")  # a bare flag is not a request
    assert store.cancel_requests() == ["old", "raced", "recent"]
    assert store.due_cancellations(older_than_s=60, now=200.0) == [("old", 100.0)]
    assert store.cancel_requests() == ["old", "recent"]  # the late request was dropped
    assert store.cancel_requested("raced")  # the flag itself stays, as before


def test_pages_read_one_index_with_exact_totals(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    for i in range(30):
        run_id = f"p{i:02d}"
        redis_client.zadd("runs:index", {run_id: 1000 + i})  # claimed, as the API does
        store.set_status(run_id, RunStatus.QUEUED)
        kind = "train_model" if i % 3 else "train_tokenizer"
        store.set_meta(run_id, kind=kind, user_id=i % 2, spec_json="{}")
        if i % 5 == 0:
            store.set_status(run_id, RunStatus.RUNNING)
    everything = store.page(limit=100)
    assert everything.total == 30
    assert everything.run_ids == [f"p{i:02d}" for i in reversed(range(30))]

    def walk(
        status: RunStatus | None = None, kind: str | None = None, user_id: int | None = None
    ) -> list[str]:
        """Every page of a filter, 4 at a time, as a client would page through it."""
        found: list[str] = []
        offset = 0
        while True:
            got = store.page(status=status, kind=kind, user_id=user_id, offset=offset, limit=4)
            found += got.run_ids
            offset += 4
            if offset >= got.total:
                return found

    owner_1 = [f"p{i:02d}" for i in reversed(range(30)) if i % 2 == 1]
    assert walk(user_id=1) == owner_1
    running = [f"p{i:02d}" for i in reversed(range(30)) if i % 5 == 0]
    assert walk(status=RunStatus.RUNNING) == running
    both = [f"p{i:02d}" for i in reversed(range(30)) if i % 5 == 0 and i % 3 and i % 2 == 0]
    assert walk(status=RunStatus.RUNNING, kind="train_model", user_id=0) == both == ["p20", "p10"]
    assert store.page(status=RunStatus.CANCELLED).total == 0


def _old_style_run(
    client: redis.Redis, run_id: str, status: str, *, kind: str | None, user: int | None
) -> None:
    """Keys as the store wrote them before the indexes existed (only runs:index)."""
    client.set(f"runs:status:{run_id}", status)
    meta: dict[FieldT, EncodableT] = {"created_at": "500.0"}
    if kind is not None:
        meta["kind"] = kind
    if user is not None:
        meta["user_id"] = str(user)
    client.hset(f"runs:meta:{run_id}", mapping=meta)


def test_migration_builds_the_indexes_from_old_keys_once(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_index, "MIGRATION_BATCH", 3)  # several batches and a remainder
    runs = {
        "a": ("running", "train_model", 1),
        "b": ("completed", "train_model", 2),
        "c": ("queued", "train_tokenizer", None),
        "d": ("failed", None, None),
        "e": ("running", "train_model", 2),
        "f": ("cancelled", "train_model", 1),
        "g": ("running", "train_model", 1),
    }
    for score, (run_id, (status, kind, user)) in enumerate(runs.items()):
        _old_style_run(redis_client, run_id, status, kind=kind, user=user)
        if run_id != "g":  # g was never in the index: its recorded creation time is used
            redis_client.zadd("runs:index", {run_id: 10.0 + score})
    redis_client.set("runs:a:cancelled", "150.0")  # asked, the worker never saw it
    redis_client.set("runs:b:cancelled", "150.0")  # asked, but the run ended anyway

    store = RunStateStore(redis_client)
    assert store.ensure_indexes()
    for run_id, (status, kind, user) in runs.items():
        assert sets_of(redis_client, run_id) == expected_sets(status, kind, user)
    assert redis_client.zscore("runs:index:status:running", "g") == 500.0
    assert redis_client.zscore("runs:index:status:running", "a") == 10.0
    assert store.due_cancellations(older_than_s=0) == [("a", 150.0)]
    assert store.stale_running(older_than_s=60) == ["a", "e", "g"]  # by creation time

    # once: a second start (or a thousand) finds the version and builds nothing
    redis_client.delete("runs:index:status:running")
    assert not store.ensure_indexes()
    assert redis_client.zcard("runs:index:status:running") == 0
    assert redis_client.get(MIGRATION_LOCK_KEY) is None  # released


def test_processes_starting_together_build_once(
    redis_client: redis.Redis, clients: Callable[[], redis.Redis]
) -> None:
    for i in range(50):
        _old_style_run(redis_client, f"r{i}", "running", kind="train_model", user=i % 4)
    barrier = threading.Barrier(6)
    built: list[bool] = []
    complete_on_return: list[bool] = []

    def start() -> None:
        client = clients()
        barrier.wait()
        built.append(RunStateStore(client).ensure_indexes())
        complete_on_return.append(client.zcard("runs:index:status:running") == 50)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(built) == [False] * 5 + [True]
    assert complete_on_return == [True] * 6  # nobody went on before the indexes were whole


def test_a_starter_waits_for_the_builder_holding_the_lock(redis_client: redis.Redis) -> None:
    redis_client.set(MIGRATION_LOCK_KEY, "another process")
    built: list[bool] = []
    waiter = threading.Thread(
        target=lambda: built.append(RunStateStore(redis_client).ensure_indexes())
    )
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()  # waiting, not building beside the other
    redis_client.set(INDEX_VERSION_KEY, run_index.INDEX_VERSION)
    redis_client.delete(MIGRATION_LOCK_KEY)
    waiter.join(5)
    assert built == [False]
