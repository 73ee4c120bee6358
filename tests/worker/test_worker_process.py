"""The worker process itself, in a fresh interpreter against a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from platform_core.run_index import INDEX_VERSION, INDEX_VERSION_KEY, index_key
from tests.processes import alive, children

pytestmark = pytest.mark.integration

PROBE = """
import sys
import redis
from trainer_worker.worker import run_worker
assert "trainer_worker.model_run" not in sys.modules
run_worker(redis.Redis.from_url(sys.argv[1]), ["probe-empty"], burst=True)
print("trainer_worker.model_run" in sys.modules, "torch" in sys.modules,
      "mlflow" in sys.modules, "mlflow.store.tracking.sqlalchemy_store" in sys.modules)
"""


@pytest.mark.parametrize(
    ("tracking", "loaded"),
    [("false", ["True", "True", "False", "False"]), ("true", ["True", "True", "True", "True"])],
)
def test_the_worker_imports_the_jobs_before_its_work_horses_fork(
    redis_url: str, tracking: str, loaded: list[str]
) -> None:
    """RQ imports a job's function in each forked work horse; imported once in the parent,
    the training code is inherited instead of costing every job seconds of imports. With
    tracking on, MLflow and its SQLite store's module too: else each run's sender would
    import them (~1.5 s of CPU) while the run trains."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, redis_url],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
        env={**os.environ, "APP__TRACKING__ENABLED": tracking},
    )
    assert done.stdout.splitlines()[-1].split() == loaded  # after RQ's own lines


def test_a_starting_worker_builds_the_run_indexes(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Its sweeps read the indexes: keys written before they existed are indexed first."""
    redis_client.set("runs:status:older", "running")
    redis_client.hset("runs:meta:older", mapping={"kind": "train_model", "user_id": 2})
    subprocess.run([sys.executable, "-c", PROBE, redis_url], timeout=120, check=True)
    assert redis_client.get(INDEX_VERSION_KEY) == INDEX_VERSION.encode()
    assert redis_client.zrange(index_key(status="running", user_id=2), 0, -1) == [b"older"]


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's parent-death signal")
def test_a_killed_workers_scheduler_dies_with_it_and_frees_its_lock(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Killing only the worker process must not leave RQ's scheduler behind holding the
    scheduler lock: the next worker would start no scheduler, and delayed retries stall."""
    env = {**os.environ, "REDIS_URL": redis_url, "APP__DATA_ROOT": str(tmp_path)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "trainer_cli", "worker", "--queues", "probe-q"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        # the scheduler registers itself once it runs (its SIGTERM handler installed)
        while not (redis_client.keys("rq:scheduler:*") and children(worker.pid)):
            assert time.monotonic() < deadline, "the worker never started its scheduler"
            time.sleep(0.1)
        started = children(worker.pid)
    finally:
        worker.kill()
        worker.wait(10)
    deadline = time.monotonic() + 15
    while any(alive(child) for child in started) or redis_client.exists(
        "rq:scheduler-lock:probe-q"
    ):
        assert time.monotonic() < deadline, "the scheduler outlived its worker"
        time.sleep(0.1)
