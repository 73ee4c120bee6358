"""The worker process: an RQ worker on the project's queues, with RQ's scheduler (delayed
retries) enabled, and a maintenance thread that requeues runs whose worker died and
force-stops runs which ignored a cancel request past the grace period.

The process outlives Redis outages: when RQ's own loop gives up on a connection error
(it does after a job, while recording its result), the worker starts again with back-off.
Its forked children, RQ's work horse and scheduler, die with it: a child left behind would
hold the scheduler lock (no scheduler would start again) or keep training a run whose
worker is gone."""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

import redis
from redis.client import Pipeline
from rq import Queue, SimpleWorker, Worker
from rq.worker.base import BaseWorker

from platform_core.event_bus import EventBus
from platform_core.layout import DataLayout
from platform_core.queue import requeue_stale_runs, sweep_cancellations
from platform_core.recovery import recover_runs
from platform_core.run_state import RunStateStore
from platform_core.settings import load_settings
from trainer_worker import defaults
from trainer_worker.tracking.backend import preload

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
    tracking = load_settings().tracking
    if tracking.enabled:  # likewise MLflow: a run's tracker then costs its training no imports
        preload(tracking)
    # the sweeps read the run indexes: built from older keys once, by whoever starts first
    RunStateStore(client).ensure_indexes()
    queues = [Queue(queue_name, connection=client) for queue_name in queue_names]
    _children_die_with(os.getpid())
    recover_runs(client, DataLayout(load_settings().data_root))
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
        restarts, delay = 0, RESTART_FIRST_S
        while True:
            # a restarted worker registers under a new name: the old one may still be listed
            worker = TrainerWorker(queues, connection=client, name=_named(name, restarts))
            try:
                return bool(worker.work(burst=burst, with_scheduler=True))
            except (redis.ConnectionError, redis.TimeoutError):
                restarts += 1
                _log.warning(
                    "Redis does not answer; the worker starts again in %.0f s",
                    delay,
                    extra={"event": "worker.restarting", "category": "worker"},
                )
                time.sleep(delay)
                delay = min(delay * 2, RESTART_MAX_S)
    finally:
        stop.set()
        maintenance.join(timeout=5)


class PipelinedHeartbeat(BaseWorker):
    """RQ's worker heartbeat (the worker's hash, its TTL and its executions' TTL) in one
    round trip: RQ sends it as three commands about three times a job, 9 of the ~50 round
    trips of a short job (a study's trial with a cheap objective)."""

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        if pipeline is not None:  # RQ's own transaction: it sends it
            super().heartbeat(timeout, pipeline=pipeline)
            return
        with self.connection.pipeline() as batch:
            super().heartbeat(timeout, pipeline=batch)
            batch.execute()


class TrainerWorker(PipelinedHeartbeat, Worker):
    """The worker `trainctl worker` runs: RQ's forking worker (a work horse per job)."""


class InProcessWorker(PipelinedHeartbeat, SimpleWorker):
    """The same worker running each job in the worker's own process, no fork (benchmarks)."""


RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_registered_for: set[int] = set()


def _named(name: str | None, restarts: int) -> str | None:
    return name if name is None or restarts == 0 else f"{name}-{restarts}"


def _children_die_with(parent: int) -> None:
    """Every child this process forks from now on gets SIGTERM when it dies (Linux; other
    systems keep RQ's own behaviour)."""
    if sys.platform != "linux" or parent in _registered_for:
        return
    _registered_for.add(parent)
    os.register_at_fork(after_in_child=lambda: _die_with_parent(parent))


def _die_with_parent(parent: int) -> None:
    if os.getppid() not in (parent, 1):  # a grandchild: its own parent answers for it
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the worker died before the request took effect
        os._exit(1)


def maintain(bus: EventBus, stop: threading.Event) -> None:
    """At start and then every MAINTENANCE_INTERVAL_S until `stop`: requeue runs whose
    worker died (they resume from their checkpoints) and force-stop runs that ignored a
    cancel request past the grace period."""
    max_attempts = load_settings().worker.max_attempts
    while True:
        try:
            requeue_stale_runs(
                bus.client,
                stale_after_s=defaults.STALE_HEARTBEAT_S,
                bus=bus,
                max_attempts=max_attempts,
            )
            for run_id in sweep_cancellations(bus.client, grace_s=defaults.CANCEL_GRACE_S, bus=bus):
                _log.warning(
                    "run force-stopped", extra={"event": "cancel.forced", "run_id": run_id}
                )
        except redis.RedisError:  # a blip must not end maintenance; the next round retries
            _log.warning("maintenance round failed", extra={"event": "worker.maintenance_failed"})
        if stop.wait(defaults.MAINTENANCE_INTERVAL_S):
            return
