"""`python -m trainer_worker.healthcheck [scheduler]`: the worker (or scheduler) container's
health check.

Healthy means an RQ worker started on this host is registered in Redis and its heartbeat is
fresh: the process is alive and can still reach the queue. With `scheduler`: an RQ cron
scheduler of this host is in RQ's scheduler registry (RQ drops one whose heartbeat is older
than its 120 s TTL). Exit 0 healthy, 1 unhealthy, 2 configuration error (trainctl's exit
codes).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import redis
from rq import Worker
from rq.cron import CronScheduler

from platform_core.errors import AppError
from platform_core.redis_connection import connect_configured
from platform_core.settings import load_settings

# RQ refreshes a worker's heartbeat well within its default 420 s worker TTL; a heartbeat
# older than that means the worker is stuck or gone.
MAX_HEARTBEAT_AGE = timedelta(seconds=420)


def healthy_workers(client: redis.Redis, hostname: str, now: datetime) -> list[str]:
    """Names of this host's registered workers whose heartbeat is fresh."""
    return [
        worker.name
        for worker in Worker.all(connection=client)
        if worker.hostname == hostname
        and worker.last_heartbeat is not None
        and now - worker.last_heartbeat.replace(tzinfo=UTC) <= MAX_HEARTBEAT_AGE
    ]


def live_schedulers(client: redis.Redis, hostname: str) -> list[str]:
    """Names of this host's RQ cron schedulers still in RQ's registry (fresh heartbeats)."""
    return [s.name for s in CronScheduler.all(client) if s.hostname == hostname]


def main(argv: Sequence[str] = ()) -> int:
    scheduler = list(argv) == ["scheduler"]
    try:
        with connect_configured(load_settings().redis) as client:
            names = (
                live_schedulers(client, socket.gethostname())
                if scheduler
                else healthy_workers(client, socket.gethostname(), datetime.now(UTC))
            )
    except AppError as error:
        sys.stderr.write(f"healthcheck: {error.code}: {error.message}\n")
        return error.exit_code
    missing = "no live scheduler" if scheduler else "no live worker"
    sys.stdout.write(f"healthy: {', '.join(names)}\n" if names else f"{missing}\n")
    return 0 if names else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
