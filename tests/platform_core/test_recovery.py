"""Runs whose Redis record is gone are rebuilt from their manifests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import redis

from platform_core.errors import ErrorCode, FailureClass
from platform_core.layout import DataLayout
from platform_core.manifests import RunFailure, RunManifest, write_manifest
from platform_core.queue import requeue_stale_runs
from platform_core.recovery import RECOVERED, recover_runs
from platform_core.run_state import RunStateStore, RunStatus


def _run(layout: DataLayout, run_id: str, status: RunStatus, **extra: object) -> None:
    layout.run_dir(run_id).mkdir(parents=True)
    manifest = RunManifest(
        run_id=run_id,
        kind="train_model",
        status=status,
        user_id=7,
        spec={"tokenizer_id": "tok"},
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    write_manifest(layout.run_manifest(run_id), manifest.model_copy(update=extra))


def test_lost_runs_come_back_with_their_ending_and_interrupted_ones_resume(
    redis_client: redis.Redis, data_root: Path
) -> None:
    layout = DataLayout(data_root)
    assert recover_runs(redis_client, layout) == []  # no runs folder yet
    failure = RunFailure(
        error_code=ErrorCode.STORAGE_FULL,
        failure_class=FailureClass.FATAL,
        message="disk full",
        attempt=1,
    )
    _run(layout, "done", RunStatus.COMPLETED)
    _run(layout, "broke", RunStatus.FAILED, failure=failure)
    _run(layout, "cut", RunStatus.RUNNING)
    _run(layout, "known", RunStatus.COMPLETED)
    (layout.runs_dir / "no-manifest").mkdir()
    (layout.runs_dir / "not an id").mkdir()
    store = RunStateStore(redis_client)
    store.set_status("known", RunStatus.QUEUED)  # Redis still knows this one: left alone

    assert recover_runs(redis_client, layout) == ["broke", "cut", "done"]
    assert store.status("done") is RunStatus.COMPLETED
    assert store.message("done") == RECOVERED
    assert (store.status("broke"), store.message("broke")) == (RunStatus.FAILED, "disk full")
    assert store.status("known") is RunStatus.QUEUED
    assert (
        store.meta("cut")["user_id"] == "7" and store.spec_json("cut") == '{"tokenizer_id": "tok"}'
    )
    assert store.recent(limit=10).count("done") == 1
    assert recover_runs(redis_client, layout) == []  # once
    # the interrupted run has no heartbeat: the next sweep requeues it, to resume by its id
    assert requeue_stale_runs(redis_client, stale_after_s=60) == ["cut"]
    assert store.status("cut") is RunStatus.QUEUED
