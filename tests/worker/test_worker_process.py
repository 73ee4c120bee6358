"""The worker process itself, in a fresh interpreter against a real Redis."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from platform_core.run_index import INDEX_VERSION, INDEX_VERSION_KEY, index_key

pytestmark = pytest.mark.integration

PROBE = """
import sys
import redis
from trainer_worker.worker import run_worker
assert "trainer_worker.model_run" not in sys.modules
run_worker(redis.Redis.from_url(sys.argv[1]), ["probe-empty"], burst=True)
print("trainer_worker.model_run" in sys.modules, "torch" in sys.modules)
"""


def test_the_worker_imports_the_jobs_before_its_work_horses_fork(redis_url: str) -> None:
    """RQ imports a job's function in each forked work horse; imported once in the parent,
    the training code is inherited instead of costing every job seconds of imports."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, redis_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.splitlines()[-1].split() == ["True", "True"]  # after RQ's own lines


def test_a_starting_worker_builds_the_run_indexes(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Its sweeps read the indexes: keys written before they existed are indexed first."""
    redis_client.set("runs:status:older", "running")
    redis_client.hset("runs:meta:older", mapping={"kind": "train_model", "user_id": 2})
    subprocess.run([sys.executable, "-c", PROBE, redis_url], timeout=120, check=True)
    assert redis_client.get(INDEX_VERSION_KEY) == INDEX_VERSION.encode()
    assert redis_client.zrange(index_key(status="running", user_id=2), 0, -1) == [b"older"]
