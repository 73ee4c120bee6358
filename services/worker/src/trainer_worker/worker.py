"""The worker process: an RQ worker on the project's queues, with RQ's scheduler (delayed
retries) enabled, and a maintenance thread that requeues runs whose worker died and
force-stops runs which ignored a cancel request past the grace period."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Sequence

import redis
from rq import Queue, Worker

from platform_core.event_bus import EventBus
from platform_core.queue import requeue_stale_runs, sweep_cancellations
from trainer_worker import defaults

_log = logging.getLogger(__name__)


def run_worker(
    client: redis.Redis,
    queue_names: Sequence[str],
    *,
    bus: EventBus | None = None,
    burst: bool = False,
    name: str | None = None,
) -> bool:
    """Work until stopped (or, with `burst`, until the queues are empty); maintenance publishes
    on `bus` (default: the default stream on `client`)."""
    # RQ imports a job's function inside each forked work horse: import the job module (torch,
    # transformers, the training code) once here, so no job pays ~6 s of imports itself
    importlib.import_module("trainer_worker.jobs")
    queues = [Queue(queue_name, connection=client) for queue_name in queue_names]
    worker = Worker(queues, connection=client, name=name)
    stop = threading.Event()
    maintenance = threading.Thread(
        target=maintain,
        args=(bus or EventBus(client), stop),
        name="worker-maintenance",
        daemon=True,
    )
    maintenance.start()
    _log.info("worker starting", extra={"event": "worker.starting", "category": "worker"})
    try:
        return bool(worker.work(burst=burst, with_scheduler=True))
    finally:
        stop.set()
        maintenance.join(timeout=5)


def maintain(bus: EventBus, stop: threading.Event) -> None:
    """At start and then every MAINTENANCE_INTERVAL_S until `stop`: requeue runs whose
    worker died (they resume from their checkpoints) and force-stop runs that ignored a
    cancel request past the grace period."""
    while True:
        try:
            requeue_stale_runs(bus.client, stale_after_s=defaults.STALE_HEARTBEAT_S, bus=bus)
            for run_id in sweep_cancellations(bus.client, grace_s=defaults.CANCEL_GRACE_S, bus=bus):
                _log.warning(
                    "run force-stopped", extra={"event": "cancel.forced", "run_id": run_id}
                )
        except redis.RedisError:  # a blip must not end maintenance; the next round retries
            _log.warning("maintenance round failed", extra={"event": "worker.maintenance_failed"})
        if stop.wait(defaults.MAINTENANCE_INTERVAL_S):
            return
