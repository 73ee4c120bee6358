"""Run state keys in a real Redis."""

from __future__ import annotations

import pytest
import redis

from platform_core.errors import AppError, ErrorCode
from platform_core.run_state import (
    RunStateStore,
    RunStatus,
    cancel_key,
    heartbeat_key,
    message_key,
    status_key,
)

pytestmark = pytest.mark.integration


def test_keys_follow_the_architecture() -> None:
    assert status_key("r") == "runs:status:r"
    assert heartbeat_key("r") == "runs:hb:r"
    assert cancel_key("r") == "runs:r:cancelled"
    assert message_key("r") == "runs:msg:r"


def test_lifecycle_and_messages(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    assert store.status("r1") is None
    assert store.message("r1") is None
    store.set_status("r1", RunStatus.QUEUED)
    store.set_status("r1", RunStatus.QUEUED)  # repeating the same status is harmless
    store.set_status("r1", RunStatus.RUNNING)
    store.set_status("r1", RunStatus.COMPLETED, message="finished in 3 s")
    assert store.status("r1") is RunStatus.COMPLETED
    assert store.status("r1").is_terminal  # type: ignore[union-attr]  # set just above
    assert not RunStatus.RUNNING.is_terminal
    assert store.message("r1") == "finished in 3 s"
    assert redis_client.get("runs:status:r1") == b"completed"


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ([RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.COMPLETED], RunStatus.RUNNING),
        ([RunStatus.QUEUED, RunStatus.CANCELLED], RunStatus.RUNNING),
        ([], RunStatus.COMPLETED),
    ],
)
def test_impossible_transitions_conflict(
    redis_client: redis.Redis, path: list[RunStatus], target: RunStatus
) -> None:
    store = RunStateStore(redis_client)
    for status in path:
        store.set_status("r", status)
    with pytest.raises(AppError) as info:
        store.set_status("r", target)
    assert info.value.code is ErrorCode.CONFLICT


def test_failed_run_can_be_requeued(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    for status in (RunStatus.RUNNING, RunStatus.FAILED, RunStatus.QUEUED):
        store.set_status("r", status)
    assert store.status("r") is RunStatus.QUEUED


def test_heartbeat_cancel_progress(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    assert store.last_heartbeat("r") is None
    store.beat("r", now=1000.5)
    assert store.last_heartbeat("r") == 1000.5
    store.beat("r")
    assert store.last_heartbeat("r") > 1000.5  # type: ignore[operator]  # set just above
    assert not store.cancel_requested("r")
    assert store.cancel_requested_at("r") is None
    assert store.cancel_requests() == []
    store.request_cancel("r", now=50.0)
    assert store.cancel_requested("r")
    assert store.cancel_requested_at("r") == 50.0
    assert store.cancel_requests() == ["r"]
    store.clear_cancel("r")
    assert not store.cancel_requested("r")
    store.request_cancel("r")
    assert store.cancel_requested_at("r") > 50.0  # type: ignore[operator]  # set just above
    assert store.progress("r") == {}
    store.set_progress("r", {"step": 5, "loss": 2.5, "phase": "train"})
    assert store.progress("r") == {"step": "5", "loss": "2.5", "phase": "train"}


def test_recent_and_stale(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    for run_id in ("a", "b", "c", "d"):
        store.set_status(run_id, RunStatus.RUNNING)
    store.set_status("d", RunStatus.COMPLETED)
    assert store.recent(limit=2) == ["d", "c"]
    assert store.recent(limit=2, offset=2) == ["b", "a"]
    store.beat("a", now=100.0)
    store.beat("b", now=195.0)
    # c never beat, a beat too long ago, b is fresh, d is finished
    assert sorted(store.stale_running(older_than_s=30, now=200.0)) == ["a", "c"]


def test_store_accepts_a_decoding_client(redis_url: str, redis_client: redis.Redis) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RunStateStore(client)
    store.set_status("s", RunStatus.QUEUED, message="waiting")
    assert store.status("s") is RunStatus.QUEUED
    assert store.message("s") == "waiting"
    client.close()


def test_meta_and_spec(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    assert store.meta("m") == {}
    assert store.spec_json("m") is None
    store.set_meta("m", kind="train_model", user_id=None, spec_json='{"a": 1}')
    assert store.meta("m")["kind"] == "train_model"
    assert "user_id" not in store.meta("m")
    assert store.spec_json("m") == '{"a": 1}'


def test_attempts_are_counted_once_each(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    assert store.attempts("r") == 0
    assert [store.next_attempt("r"), store.next_attempt("r")] == [1, 2]
    assert store.attempts("r") == 2


def test_the_published_mark_only_ever_rises(redis_client: redis.Redis) -> None:
    store = RunStateStore(redis_client)
    assert store.published_step("r") == -1
    assert store.mark_published("r", 40) == 40
    assert store.mark_published("r", 10) == 40  # a resumed attempt repeating steps
    assert store.published_step("r") == 40
    assert store.mark_published("r", 41) == 41
