"""A disk that fills up while a run trains: the run fails once, as STORAGE_FULL, everywhere
it can say so, and leaves no partial file behind. The run's data root is a tmpfs of a few MB
mounted in a user and mount namespace of its own (no root needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from platform_core.errors import ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import JobFailed
from platform_core.queue import requeue_stale_runs
from platform_core.run_state import RunStateStore, RunStatus

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).parents[2]
SCRIPT = Path(__file__).with_name("full_disk_main.py")


def test_a_full_disk_fails_the_run_once_with_storage_full(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    unshare = shutil.which("unshare")
    assert unshare is not None, "util-linux's unshare runs this test"
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    command = (
        f"mount -t tmpfs -o size=3m tmpfs {mount_point} && "
        f"exec {sys.executable} {SCRIPT} {mount_point} {redis_url}"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])

    assert report["result"]["status"] == "failed"
    assert report["result"]["error_code"] == ErrorCode.STORAGE_FULL.value
    assert [f for f in report["files"] if f.endswith(".tmp")] == []  # nothing half-written
    assert report["torn_log_lines"] == 0
    store = RunStateStore(redis_client)
    assert store.status("full") is RunStatus.FAILED  # in Redis although the disk took nothing
    failures = [
        d.event
        for d in EventBus(redis_client).read(count=10_000)
        if isinstance(d.event, JobFailed) and d.event.run_id == "full"
    ]
    assert len(failures) == 1 and failures[0].ends_run
    assert failures[0].payload.error_code is ErrorCode.STORAGE_FULL
    # ended: no sweep ever restarts it
    assert requeue_stale_runs(redis_client, stale_after_s=0.0) == []
