"""RunReporter: the cancel flag and a run's publications on a thread of their own, against a
real Redis."""

from __future__ import annotations

import contextvars
import functools
import threading
import time

import pytest
import redis

from platform_core.run_state import RunStateStore
from trainer_worker import run_reporter
from trainer_worker.run_reporter import RunReporter

_ATTEMPT = contextvars.ContextVar("attempt", default="none")


def _wait_for(condition: threading.Event, timeout_s: float = 5.0) -> bool:
    return condition.wait(timeout_s)


def test_the_cancel_flag_is_polled_on_a_timer_not_on_every_call(
    redis_client: redis.Redis,
) -> None:
    store = RunStateStore(redis_client)
    polls: list[float] = []

    def poll() -> bool:
        polls.append(time.monotonic())
        return store.cancel_requested("run-r")

    reporter = RunReporter(poll, poll_interval_s=0.05)
    try:
        assert not any(reporter.stop_requested() for _ in range(10_000))
        assert 1 <= len(polls) <= 20  # the first poll inline, then the timer's: not 10,000
        store.request_cancel("run-r")
        deadline = time.monotonic() + 5.0
        while not reporter.stop_requested() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert reporter.stop_requested()
    finally:
        reporter.close()


def test_a_flag_raised_before_the_first_step_is_seen_by_the_first_call(
    redis_client: redis.Redis,
) -> None:
    store = RunStateStore(redis_client)
    store.request_cancel("run-r")
    reporter = RunReporter(lambda: store.cancel_requested("run-r"), poll_interval_s=60.0)
    try:
        assert reporter.stop_requested()
    finally:
        reporter.close()


def test_work_runs_in_order_off_the_caller_thread_with_its_context() -> None:
    done: list[tuple[int, str, bool]] = []
    token = _ATTEMPT.set("attempt-2")  # as log_context(run_id=...) is set around a job's body
    reporter = RunReporter(lambda: False, poll_interval_s=0.01)

    def work(i: int) -> None:
        time.sleep(0.001)
        on_caller = threading.current_thread() is threading.main_thread()
        done.append((i, _ATTEMPT.get(), on_caller))

    for i in range(3 * run_reporter.MAX_PENDING):  # more than the queue holds: submit waits
        reporter.submit(functools.partial(work, i))
    reporter.close()  # runs everything submitted before it returns
    _ATTEMPT.reset(token)
    assert done == [(i, "attempt-2", False) for i in range(3 * run_reporter.MAX_PENDING)]


def test_a_full_queue_holds_the_caller_back() -> None:
    release = threading.Event()
    reporter = RunReporter(lambda: False, poll_interval_s=0.01)

    def busy() -> None:
        release.wait(5.0)

    reporter.submit(busy)  # the thread is busy until released
    for _ in range(run_reporter.MAX_PENDING):
        reporter.submit(lambda: None)
    submitted = threading.Event()

    def submit_one() -> None:
        reporter.submit(lambda: None)
        submitted.set()

    caller = threading.Thread(target=submit_one)
    caller.start()
    assert not submitted.wait(0.2)  # the queue is full: the caller waits for the reporter
    release.set()
    assert _wait_for(submitted)
    caller.join()
    reporter.close()


def test_an_error_on_the_thread_is_raised_on_the_caller_thread() -> None:
    reporter = RunReporter(lambda: False, poll_interval_s=0.01)

    def publish() -> None:
        raise redis.ConnectionError("Redis went away")

    reporter.submit(publish)
    deadline = time.monotonic() + 5.0
    with pytest.raises(redis.ConnectionError, match="went away"):  # polls until raised
        while time.monotonic() < deadline:
            reporter.stop_requested()
            time.sleep(0.005)
    reporter.close()  # raised once: closing after it does not raise it again


def test_a_failing_poll_fails_the_run_at_close() -> None:
    polls = iter([False])

    def poll() -> bool:
        if next(polls, None) is None:  # the timer's polls: Redis is gone
            raise redis.ConnectionError("Redis went away")
        return False

    reporter = RunReporter(poll, poll_interval_s=0.01)
    assert not reporter.stop_requested()  # the inline first poll worked
    time.sleep(0.1)
    with pytest.raises(redis.ConnectionError):
        reporter.close()
