"""Each registry change marks its name for the MLflow mirror and queues the mirror job (on a
real Redis); a queue that refuses never undoes the change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
import rq
from rq import Queue

from platform_core.layout import DataLayout
from platform_core.model_registry import MIRROR_JOB, MIRROR_PENDING_KEY, ModelRegistry
from platform_core.queue import INFERENCE_QUEUE

pytestmark = pytest.mark.integration


def _registry(redis_client: redis.Redis, data_root: Path) -> ModelRegistry:
    layout = DataLayout(data_root)
    folder = layout.model_dir("run-r")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "a"}}), encoding="utf-8")
    return ModelRegistry(redis_client, layout)


def test_changes_mark_the_name_and_queue_the_mirror(
    redis_client: redis.Redis, data_root: Path
) -> None:
    registry = _registry(redis_client, data_root)
    registry.register("m", None, source_run="run-r", dataset_id=None, actor="t", reason="")
    registry.promote("m", "1.0.0", "production", actor="t", reason="")
    assert redis_client.hget(MIRROR_PENDING_KEY, "m") == b"2"
    jobs = Queue(INFERENCE_QUEUE, connection=redis_client).jobs
    assert [job.func_name for job in jobs] == [MIRROR_JOB, MIRROR_JOB]
    assert jobs[0].retries_left == 2


def test_a_refused_queue_leaves_the_change_standing(
    redis_client: redis.Redis,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = _registry(redis_client, data_root)

    def refuse(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("queue gone")

    monkeypatch.setattr(rq.Queue, "enqueue", refuse)
    registry.register("m", None, source_run="run-r", dataset_id=None, actor="t", reason="")
    assert [state.version for state in registry.versions("m")] == ["1.0.0"]
    assert "registry mirror not queued" in caplog.text
