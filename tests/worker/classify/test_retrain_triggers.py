"""The retraining triggers and their edges on a real Redis, without training: cron policies
(validated; each due slot fires once, never one from before the policy was set), the
data-growth check (same source only, the threshold, models it does not apply to), the
scheduler's tick job and its RQ cron registration, the lock, and the jobs' refusals (a
training run that did not complete fails the verdict run and frees the model)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from pydantic import ValidationError
from rq import Queue, SimpleWorker
from rq.cron import CronScheduler

from platform_core import retraining
from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import JobFailed
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.manifests import read_dataset_manifest
from platform_core.model_registry import ModelRegistry
from platform_core.queue import INFERENCE_QUEUE, TRAINING_QUEUE, enqueue_job
from platform_core.retrain_specs import RetrainPolicy, RetrainPolicyPublic
from platform_core.retraining import (
    all_policies,
    claim,
    get_policy,
    growth_retrains,
    lock_key,
    policies_key,
    put_policy,
    release_lock,
    request_retrain,
    scheduled_retrains,
)
from platform_core.run_state import INDEX_KEY, RunStateStore, RunStatus
from tests.classify_models import save_tiny_classifier
from tests.manifests import write_run_manifest
from trainer_cli.main import main
from trainer_worker import defaults
from trainer_worker.classify.retrain_jobs import scheduled_tick
from trainer_worker.cli.commands import scheduler_command
from trainer_worker.cli.scheduler_command import build_scheduler

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def worker_env(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> Iterator[None]:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)
    yield


def _work(client: redis.Redis, queue: str = TRAINING_QUEUE) -> None:
    SimpleWorker([Queue(queue, connection=client)], connection=client).work(burst=True)


def _rows(data_root: Path, per_class: int, path: str = "rows.jsonl") -> JsonObject:
    rows = [
        {"text": f"word{n} topic{label} alpha beta gamma", "label": label}
        for label in ("x", "y")
        for n in range(per_class)
    ]
    (data_root / path).write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return {"source": {"kind": "file", "path": path}, "baseline": False}


@pytest.fixture
def registry(redis_client: redis.Redis, data_root: Path) -> ModelRegistry:
    """`clf` 1.0.0 in production, a classifier spec on dataset ds-1 (20 rows a class)."""
    enqueue_job(redis_client, "prepare_dataset", "ds-1", _rows(data_root, 20))
    _work(redis_client)
    save_tiny_classifier(data_root, "run-a")
    spec: JsonObject = {
        "model": {"family": "classifier", "preset": "tiny"},
        "classifier": {"dataset_id": "ds-1"},
        "train": {"max_steps": 10, "device": "cpu"},
    }
    write_run_manifest(data_root / "runs" / "run-a", spec)
    registry = ModelRegistry(redis_client, DataLayout(data_root))
    registry.register("clf", None, source_run="run-a", dataset_id="ds-1", actor="t", reason="")
    registry.promote("clf", "1.0.0", "production", actor="t", reason="")
    return registry


def test_cron_expressions_are_validated() -> None:
    assert RetrainPolicy(cron="*/15 2-4 * * mon-fri").cron == "*/15 2-4 * * mon-fri"
    assert RetrainPolicy().cron is None and RetrainPolicy().growth_threshold == 0.1
    for bad in ("61 * * * *", "0 25 * * *", "* * 32 * *", "0 3 * * funday"):
        with pytest.raises(ValidationError, match="is not a valid cron expression"):
            RetrainPolicy(cron=bad)
    for shapeless in ("* * *", "0 3 * * 1 2026", "daily", "", "0  3 * * 1"):
        with pytest.raises(ValidationError, match="should match pattern"):
            RetrainPolicy(cron=shapeless)


def test_each_due_slot_fires_once_and_none_from_before_the_policy(
    redis_client: redis.Redis, data_root: Path, registry: ModelRegistry
) -> None:
    layout, bus = DataLayout(data_root), EventBus(redis_client)
    stored = put_policy(redis_client, "clf", RetrainPolicy(cron="0 * * * *"))
    put_policy(redis_client, "other", RetrainPolicy())  # no schedule: never ticks
    top = stored.updated_at.replace(minute=0, second=0, microsecond=0)
    # the policy was set after this hour's slot: it does not fire
    assert scheduled_retrains(redis_client, layout, bus=bus, now=stored.updated_at) == []
    later = top + timedelta(hours=1, minutes=5)
    queued = scheduled_retrains(redis_client, layout, bus=bus, now=later)
    assert len(queued) == 1
    store = RunStateStore(redis_client)
    assert json.loads(store.spec_json(queued[0]) or "{}")["trigger"] == "schedule"
    assert scheduled_retrains(redis_client, layout, bus=bus, now=later) == []  # fired
    # the next slot while the first retraining holds the model: skipped, not queued
    assert scheduled_retrains(redis_client, layout, bus=bus, now=later + timedelta(hours=1)) == []
    release_lock(redis_client, "clf", queued[0])
    assert redis_client.get(lock_key("clf")) is None
    nxt = scheduled_retrains(redis_client, layout, bus=bus, now=later + timedelta(hours=2))
    assert len(nxt) == 1 and nxt != queued
    release_lock(redis_client, "clf", "retrain-someone-else")  # not the holder: kept
    assert redis_client.get(lock_key("clf")) == nxt[0].encode()


def test_the_scheduler_tick_runs_as_an_rq_job_and_is_registered_with_rq_cron(
    redis_client: redis.Redis, data_root: Path, registry: ModelRegistry
) -> None:
    set_two_minutes_ago = RetrainPolicyPublic(
        name="clf",
        policy=RetrainPolicy(cron="* * * * *"),
        updated_at=datetime.now(UTC) - timedelta(minutes=2),
    )
    redis_client.hset(policies_key(), "clf", set_two_minutes_ago.model_dump_json())
    job = Queue(INFERENCE_QUEUE, connection=redis_client).enqueue(scheduled_tick)
    _work(redis_client, INFERENCE_QUEUE)
    result = job.latest_result()
    assert result is not None and result.return_value is not None
    queued = result.return_value["queued"]
    assert len(queued) == 1 and queued[0].startswith("retrain-")

    scheduler = build_scheduler(redis_client, "test-scheduler")
    [cron_job] = scheduler.get_jobs()  # what RQ will enqueue each minute
    assert (cron_job.cron, cron_job.queue_name) == ("* * * * *", INFERENCE_QUEUE)
    assert cron_job.func_name == "trainer_worker.classify.retrain_jobs.scheduled_tick"
    parser = argparse.ArgumentParser()
    assert scheduler_command(parser).__name__ == "run_scheduler_command"
    assert parser.parse_args(["--name", "s1"]).name == "s1"


def test_growth_applies_to_the_same_source_past_the_threshold_only(
    redis_client: redis.Redis,
    data_root: Path,
    registry: ModelRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    layout, bus = DataLayout(data_root), EventBus(redis_client)
    enqueue_job(redis_client, "prepare_dataset", "ds-other", _rows(data_root, 40, "other.jsonl"))
    enqueue_job(redis_client, "prepare_dataset", "ds-small", _rows(data_root, 21))  # +5 %
    _work(redis_client)
    put_policy(redis_client, "clf", RetrainPolicy(growth_threshold=0.1))
    put_policy(redis_client, "off", RetrainPolicy(growth_threshold=None))
    put_policy(redis_client, "unpromoted", RetrainPolicy())
    for dataset_id in ("ds-other", "ds-small"):
        dataset = read_dataset_manifest(layout.dataset_manifest(dataset_id))
        assert growth_retrains(redis_client, layout, dataset, bus=bus) == [], dataset_id
    assert [p.name for p in all_policies(redis_client)] == ["clf", "off", "unpromoted"]

    # production's dataset removed: that model cannot tell how much its data grew, it is skipped
    layout.dataset_manifest("ds-1").unlink()
    grown = read_dataset_manifest(layout.dataset_manifest("ds-other"))
    with caplog.at_level(logging.WARNING):
        assert growth_retrains(redis_client, layout, grown, bus=bus) == []
    assert any(r.getMessage() == "production dataset unreadable" for r in caplog.records)


def test_a_broken_policy_store_never_fails_a_dataset_preparation(
    redis_client: redis.Redis, data_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client.hset(policies_key(), "clf", "{not json")
    with pytest.raises(AppError) as unreadable:
        get_policy(redis_client, "clf")
    assert unreadable.value.code is ErrorCode.DATA_INVALID
    with caplog.at_level(logging.ERROR):
        enqueue_job(redis_client, "prepare_dataset", "ds-1", _rows(data_root, 20))
        _work(redis_client)
    assert RunStateStore(redis_client).status("ds-1") is RunStatus.COMPLETED
    assert any(r.getMessage() == "data-growth check failed" for r in caplog.records)


def test_a_run_id_is_claimed_once(redis_client: redis.Redis) -> None:
    claim(redis_client, "retrain-x")
    with pytest.raises(AppError) as taken:
        claim(redis_client, "retrain-x")
    assert taken.value.code is ErrorCode.CONFLICT


def test_a_verdict_after_a_failed_training_fails_and_frees_the_model(
    redis_client: redis.Redis, data_root: Path, registry: ModelRegistry
) -> None:
    redis_client.set(lock_key("clf"), "retrain-1")
    spec: JsonObject = {
        "name": "clf",
        "trigger": "manual",
        "production_version": "1.0.0",
        "dataset_id": "ds-1",
        "train_run": "retrain-1-train",  # never ran
        "min_accuracy_gain": 0.02,
        "alpha": 0.05,
        "actor": "api",
    }
    enqueue_job(redis_client, "retrain_model", "retrain-1", spec, user_id=7)
    enqueue_job(redis_client, "compare_models", "cmp-bad", {"name": "clf"})
    _work(redis_client)
    store = RunStateStore(redis_client)
    assert store.status("retrain-1") is RunStatus.FAILED
    assert "training run retrain-1-train ended unknown" in (store.message("retrain-1") or "")
    assert redis_client.get(lock_key("clf")) is None
    assert registry.production("clf") == "1.0.0"
    assert store.status("cmp-bad") is RunStatus.FAILED
    failed = [
        d.event for d in EventBus(redis_client).read(count=1000) if isinstance(d.event, JobFailed)
    ]
    codes = {event.run_id: event.payload.error_code for event in failed}
    assert codes == {"retrain-1": ErrorCode.TRAINING_FAILED, "cmp-bad": ErrorCode.INVALID_INPUT}


def test_trainctl_scheduler_registers_with_rq_and_stops_on_sigterm(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_client: redis.Redis
) -> None:
    """`trainctl scheduler` in this process: it registers itself in RQ's cron scheduler
    registry and returns 0 once SIGTERM asks it to stop."""
    monkeypatch.setenv("APP__REDIS__URL", redis_url)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    seen: list[list[str]] = []

    def stop() -> None:
        seen.append([s.name for s in CronScheduler.all(redis_client)])
        os.kill(os.getpid(), signal.SIGTERM)

    timer = threading.Timer(1.5, stop)
    timer.start()
    try:
        assert main(["scheduler", "--name", "sched-test"]) == 0
    finally:
        timer.cancel()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert seen == [["sched-test"]]
    assert [s.name for s in CronScheduler.all(redis_client)] == []  # gone once stopped


def test_a_retraining_that_cannot_be_queued_frees_its_model_and_its_ids(
    redis_client: redis.Redis,
    data_root: Path,
    registry: ModelRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layout, bus = DataLayout(data_root), EventBus(redis_client)
    monkeypatch.setattr(retraining, "new_run_id", lambda prefix: "not an id!")
    with pytest.raises(AppError) as refused:
        request_retrain(redis_client, layout, "clf", trigger="manual", bus=bus)
    assert refused.value.code is ErrorCode.INVALID_INPUT
    assert redis_client.get(lock_key("clf")) is None
    assert redis_client.zscore(INDEX_KEY, "not an id!-data") is None

    registry.register("nods", None, source_run="run-a", dataset_id=None, actor="t", reason="")
    registry.promote("nods", "1.0.0", "production", actor="t", reason="")
    with pytest.raises(AppError) as no_dataset:
        request_retrain(redis_client, layout, "nods", trigger="manual", bus=bus)
    assert no_dataset.value.code is ErrorCode.CONFLICT
    assert "records no dataset to refresh" in no_dataset.value.message

    save_tiny_classifier(data_root, "run-lm")  # a saved model; its spec is a language model's
    lm_spec: JsonObject = {"model": {"family": "char_lstm", "preset": "tiny"}, "tokenizer_id": "t"}
    write_run_manifest(data_root / "runs" / "run-lm", lm_spec)
    registry.register("lm", None, source_run="run-lm", dataset_id=None, actor="t", reason="")
    registry.promote("lm", "1.0.0", "production", actor="t", reason="")
    with pytest.raises(AppError) as not_a_classifier:
        request_retrain(redis_client, layout, "lm", trigger="manual", bus=bus)
    assert "is not a classifier" in not_a_classifier.value.message


def test_a_comparison_of_a_version_whose_folder_is_gone_fails_typed(
    redis_client: redis.Redis, data_root: Path, registry: ModelRegistry
) -> None:
    spec: JsonObject = {
        "name": "clf",
        "current": "1.0.0",
        "candidate": "9.9.9",
        "dataset_id": "ds-1",
        "min_accuracy_gain": 0.02,
        "alpha": 0.05,
    }
    enqueue_job(redis_client, "compare_models", "cmp-gone", spec)
    _work(redis_client)
    store = RunStateStore(redis_client)
    assert store.status("cmp-gone") is RunStatus.FAILED
    assert "no registered model folder 9.9.9" in (store.message("cmp-gone") or "")
