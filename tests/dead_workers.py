"""A run whose worker took its job and died, as the stale-run sweep finds it: the sweep's
tests build it here instead of killing a worker process."""

from __future__ import annotations

import redis
from rq import Queue
from rq.job import Job, JobStatus

from platform_core.run_state import RunStateStore, RunStatus


def died_running(client: redis.Redis, run_id: str, *, attempts: int, beat_at: float) -> None:
    """A worker took the run's RQ job off its queue (RQ: started) and died, after `attempts`
    attempts of the run had started: the run is left running, its last beat at `beat_at`."""
    store = RunStateStore(client)
    job = Job.fetch(store.job_id(run_id) or run_id, connection=client)
    Queue(job.origin, connection=client).remove(job)
    job.set_status(JobStatus.STARTED)
    for _ in range(attempts):
        store.next_attempt(run_id)
    store.set_status(run_id, RunStatus.RUNNING)
    store.beat(run_id, now=beat_at)
