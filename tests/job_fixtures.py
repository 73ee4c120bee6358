"""Tiny jobs the queue tests run in a real RQ worker process."""

from __future__ import annotations

import time

from rq import get_current_job

from platform_core.json_types import JsonObject
from platform_core.run_state import RunStateStore, RunStatus


def sleepy(
    run_id: str, spec: JsonObject, *, attempt: int = 1, user_id: int | None = None
) -> JsonObject:
    """Marks itself running, then ignores the cooperative flag for up to a minute."""
    job = get_current_job()
    assert job is not None
    RunStateStore(job.connection).set_status(run_id, RunStatus.RUNNING)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return {"run_id": run_id, "slept": True}
