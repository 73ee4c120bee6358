"""A classifier run whose worker is killed mid-run (worker and work horse at once) resumes
from its newest checkpoint in a new attempt and completes with its full test report, its
eval history holding each step once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from rq import Queue, SimpleWorker

from platform_core.layout import DataLayout
from platform_core.manifests import read_run_manifest
from platform_core.queue import TRAINING_QUEUE, enqueue_job, requeue_stale_runs
from platform_core.run_state import RunStateStore, RunStatus
from tests.processes import children
from tests.worker.classify.classifier_helpers import DATASET_SPEC, classifier_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).parents[3]
MAX_STEPS = 300


def _worker(data_root: Path, redis_url: str, *, burst: bool) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP__")}
    env.update(
        {
            "APP__DATA_ROOT": str(data_root),
            "REDIS_URL": redis_url,
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1",  # tiny matrices: one thread is faster on a busy machine
        }
    )
    command = [sys.executable, "-m", "trainer_cli", "worker", "--queues", TRAINING_QUEUE]
    return subprocess.Popen(
        [*command, "--burst"] if burst else command,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _newest_step(folder: Path) -> int:
    index = folder / "checkpoints" / "index.json"
    if not index.is_file():
        return -1
    return max((row["step"] for row in json.loads(index.read_text())), default=-1)


def test_a_killed_classifier_run_resumes_and_reports(
    redis_client: redis.Redis, redis_url: str, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    enqueue_job(redis_client, "prepare_dataset", "ds-boto", DATASET_SPEC)
    SimpleWorker([Queue(TRAINING_QUEUE, connection=redis_client)], connection=redis_client).work(
        burst=True
    )
    # no early stopping here: the run must still be going when it is killed
    spec = classifier_spec("ds-boto", max_steps=MAX_STEPS, early_stopping_patience=None)
    enqueue_job(redis_client, "train_model", "victim", spec)
    worker = _worker(data_root, redis_url, burst=False)
    folder = DataLayout(data_root).run_dir("victim")
    deadline = time.monotonic() + 240
    while _newest_step(folder) < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    for victim in [worker.pid, *children(worker.pid)]:
        os.kill(victim, signal.SIGKILL)
    worker.wait(10)
    killed_at = _newest_step(folder)
    assert 100 <= killed_at < MAX_STEPS, "the worker must die mid-run"
    store = RunStateStore(redis_client)
    assert store.status("victim") is RunStatus.RUNNING  # nobody told Redis it died

    time.sleep(1.2)  # the heartbeat has stopped: the run is now stale
    assert requeue_stale_runs(redis_client, stale_after_s=1.0) == ["victim"]
    assert _worker(data_root, redis_url, burst=True).wait(240) == 0
    assert store.status("victim") is RunStatus.COMPLETED, store.message("victim")

    manifest = read_run_manifest(folder / "manifest.json")
    assert manifest.resumed_from_step == killed_at
    assert manifest.attempt == 2
    record = manifest.classifier
    assert record is not None and record.test.accuracy > 3 / len(record.labels)
    steps = [json.loads(line)["step"] for line in (folder / "eval" / "history.jsonl").open()]
    assert steps == sorted(set(steps)) and steps[-1] == MAX_STEPS
    assert record.best_step in steps
    assert (folder / "model" / "config.json").is_file()
