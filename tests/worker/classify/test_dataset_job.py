"""The prepare_dataset job through RQ (SimpleWorker, in-process) and a real Redis: the
dataset folder appears whole, its report goes into the completed event, a bad file fails
as the user's error with row numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from rq import Queue, SimpleWorker

from platform_core import queue
from platform_core.errors import ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import Event, JobCancelled, JobCompleted, JobFailed
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.manifests import read_dataset_manifest
from platform_core.queue import TRAINING_QUEUE, enqueue_job
from platform_core.run_state import RunStateStore, RunStatus
from trainer_worker import defaults
from trainer_worker.classify import dataset_job

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def worker_env(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> None:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.setattr(queue, "TRANSIENT_RETRY", (0, 0))
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)


def _work(client: redis.Redis) -> None:
    SimpleWorker([Queue(TRAINING_QUEUE, connection=client)], connection=client).work(burst=True)


def _events(client: redis.Redis) -> list[Event]:
    return [d.event for d in EventBus(client).read(count=1000)]


def _write_rows(path: Path, per_label: int) -> None:
    topics = (("bio", "cells proteins genome"), ("astro", "stars galaxies orbit"))
    lines = [
        {"id": f"{label}{i}", "text": f"paper {i} on {topic} number {i}", "label": label}
        for label, topic in topics
        for i in range(per_label)
    ]
    lines.append(dict(lines[0]))  # a duplicate id
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_builtin_dataset_job_writes_folder_and_reports_in_completed_event(
    redis_client: redis.Redis, data_root: Path
) -> None:
    spec: JsonObject = {"source": {"kind": "builtin", "max_per_class": 20}, "seed": 5}
    enqueue_job(redis_client, "prepare_dataset", "ds-builtin", spec, user_id=7)
    _work(redis_client)
    assert RunStateStore(redis_client).status("ds-builtin") is RunStatus.COMPLETED
    layout = DataLayout(data_root)
    manifest = read_dataset_manifest(layout.dataset_manifest("ds-builtin"))
    assert manifest.source.startswith("builtin:botocore ")
    assert manifest.report.rows_kept == sum(manifest.report.class_counts.values())
    assert len(manifest.report.labels) == 15
    assert manifest.baseline is not None and manifest.baseline.test.accuracy > 0.3
    assert set(manifest.files) == {
        "train.jsonl",
        "val.jsonl",
        "test.jsonl",
        "report.json",
        "eval/baseline.json",
    }
    test_rows = layout.dataset_split("ds-builtin", "test").read_text().splitlines()
    assert len(test_rows) == sum(manifest.report.split_counts["test"].values())
    assert not layout.dataset_work_dir("ds-builtin").exists()
    completed = _events(redis_client)[-1]
    assert isinstance(completed, JobCompleted) and completed.user_id == 7
    assert completed.payload.artifact_dir == "datasets/ds-builtin"
    report = completed.payload.report
    assert report is not None
    assert report["class_counts"] == manifest.report.class_counts
    assert report["duplicates_by_text"] == manifest.report.duplicates_by_text
    assert "baseline test accuracy" in completed.payload.message


def test_file_dataset_job_dedups_and_splits(redis_client: redis.Redis, data_root: Path) -> None:
    _write_rows(data_root / "papers.jsonl", per_label=30)
    spec: JsonObject = {"source": {"kind": "file", "path": "papers.jsonl"}, "baseline": False}
    enqueue_job(redis_client, "prepare_dataset", "ds-file", spec)
    _work(redis_client)
    manifest = read_dataset_manifest(DataLayout(data_root).dataset_manifest("ds-file"))
    assert manifest.report.duplicates_by_id == 1
    assert manifest.report.class_counts == {"astro": 30, "bio": 30}
    assert manifest.report.split_counts["val"] == {"astro": 3, "bio": 3}
    assert manifest.baseline is None


def test_invalid_rows_fail_as_user_input_with_row_numbers(
    redis_client: redis.Redis, data_root: Path
) -> None:
    rows = [{"text": "fine text here", "label": "a"}, {"text": 3, "label": "a"}, {"label": "b"}]
    (data_root / "bad.json").write_text(json.dumps(rows))
    spec: JsonObject = {"source": {"kind": "file", "path": "bad.json"}}
    enqueue_job(redis_client, "prepare_dataset", "ds-bad", spec)
    _work(redis_client)
    failed = _events(redis_client)[-1]
    assert isinstance(failed, JobFailed)
    assert failed.payload.error_code is ErrorCode.DATA_INVALID
    assert failed.payload.failure_class == "USER_INPUT"
    assert "row 2: text must be a string" in failed.payload.message
    assert "row 3: missing text" in failed.payload.message
    assert not DataLayout(data_root).dataset_dir("ds-bad").exists()


def test_a_cancel_request_stops_collection_and_leaves_no_dataset(
    redis_client: redis.Redis, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset_job, "CANCEL_CHECK_S", 0.0)  # look at the flag on every row
    _write_rows(data_root / "papers.jsonl", per_label=30)
    spec: JsonObject = {"source": {"kind": "file", "path": "papers.jsonl"}}
    enqueue_job(redis_client, "prepare_dataset", "ds-stop", spec)
    RunStateStore(redis_client).request_cancel("ds-stop")
    _work(redis_client)
    assert RunStateStore(redis_client).status("ds-stop") is RunStatus.CANCELLED
    cancelled = _events(redis_client)[-1]
    assert isinstance(cancelled, JobCancelled)
    assert cancelled.payload.message == "cancelled while collecting"
    assert not DataLayout(data_root).dataset_dir("ds-stop").exists()
