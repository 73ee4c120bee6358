"""The worker's heartbeats on a real Redis: one thread per process beats for every run inside a
`Heartbeat`, each at its own interval, never after its block ended, through a Redis blip."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable

import pytest
import redis
from rq import Queue

from platform_core.run_state import RunStateStore
from trainer_worker import heartbeat
from trainer_worker.heartbeat import Heartbeat
from trainer_worker.worker import InProcessWorker, TrainerWorker


def _beats(store: RunStateStore, run_id: str, seconds: float) -> int:
    """How many times the run's heartbeat moved over `seconds`."""
    seen, last = 0, store.last_heartbeat(run_id)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = store.last_heartbeat(run_id)
        if now != last:
            seen, last = seen + 1, now
        time.sleep(0.005)
    return seen


def test_nested_beats_share_one_thread_each_at_its_interval(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    threads_before = threading.active_count()
    with Heartbeat(store, "st-1", 0.3):
        assert store.last_heartbeat("st-1") is not None  # at once, on entering
        with Heartbeat(store, "run-1", 0.05):
            assert store.last_heartbeat("run-1") is not None
            assert threading.active_count() <= threads_before + 1  # one thread for both
            fast = _beats(store, "run-1", 1.0)
            slow = _beats(store, "st-1", 0.7)
        assert heartbeat._BEATER.thread is not None
        # over 1 s at 0.05 s: about 20 beats (allow a slow machine half of them)
        assert fast >= 10
        # over 0.7 s at 0.3 s: 2, possibly 3; the fast one never hurried the slow one
        assert 1 <= slow <= 3
        last_fast = store.last_heartbeat("run-1")
        assert _beats(store, "run-1", 0.3) == 0  # its block ended: no beat follows
        assert store.last_heartbeat("run-1") == last_fast
        assert _beats(store, "st-1", 0.7) >= 1  # the outer one goes on


@pytest.mark.parametrize(
    "error",
    [redis.ConnectionError("blip"), ValueError("a reply the client could not parse")],
    ids=["redis-blip", "any-other-error"],
)
def test_a_failed_beat_is_logged_and_the_next_one_comes(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    """The one beat thread serves every run of the process: no error may end it."""

    class Flaky(RunStateStore):
        fails = 1

        def beat(self, run_id: str, *, now: float | None = None) -> None:
            if self.fails and threading.current_thread().name == "heartbeat":
                self.fails -= 1
                raise error
            super().beat(run_id, now=now)

    store = Flaky(redis_client)
    with Heartbeat(store, "run-2", 0.05):
        first = store.last_heartbeat("run-2")
        assert _beats(store, "run-2", 0.5) >= 3
    assert store.fails == 0 and store.last_heartbeat("run-2") != first
    assert "heartbeat failed" in caplog.text


def _child_beats(url: str, run_id: str) -> None:
    """In a forked process (RQ's work horse): its own beat thread beats its run."""
    store = RunStateStore(redis.Redis.from_url(url))
    with Heartbeat(store, run_id, 0.05):
        time.sleep(0.6)


def test_a_forked_work_horse_beats_from_a_thread_of_its_own(
    redis_client: redis.Redis, redis_url: str
) -> None:
    """The parent's beat thread does not survive a fork: the child starts its own (without
    it, the child would beat once on entering and never again, and its run would be taken
    for dead)."""
    store = RunStateStore(redis_client)
    with Heartbeat(store, "parent-run", 5.0):  # the parent's thread is running
        child = multiprocessing.get_context("fork").Process(
            target=_child_beats, args=(redis_url, "child-run")
        )
        child.start()
        _wait_until(lambda: store.last_heartbeat("child-run") is not None)
        assert _beats(store, "child-run", 0.4) >= 3
        child.join(10)
    assert child.exitcode == 0


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_the_rq_workers_heartbeat_is_one_round_trip(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RQ sends the worker's heartbeat as three commands about three times a job; the
    project's workers send it as one transaction, and it still does what RQ's does."""
    queue = Queue("hb-test", connection=redis_client)
    direct: list[str] = []
    original = redis.Redis.execute_command

    def counting(self: redis.Redis, *args: str, **options: str) -> object:
        direct.append(args[0])
        return original(self, *args, **options)  # type: ignore[no-untyped-call]

    for worker_class in (TrainerWorker, InProcessWorker):
        worker = worker_class([queue], connection=redis_client)
        worker.register_birth()  # type: ignore[no-untyped-call]  # rq leaves it unannotated
        redis_client.hdel(worker.key, "last_heartbeat")
        direct.clear()
        monkeypatch.setattr(redis.Redis, "execute_command", counting)
        worker.heartbeat(90)
        monkeypatch.undo()
        assert direct == [], direct  # nothing sent outside the one transaction
        assert redis_client.hget(worker.key, "last_heartbeat") is not None
        assert 0 < redis_client.ttl(worker.key) <= 90
        worker.register_death()  # type: ignore[no-untyped-call]
