"""`python -m trainer_worker.healthcheck`: the worker container's health check.

Healthy means an RQ worker started on this host is registered in Redis and its heartbeat is
fresh: the process is alive and can still reach the queue. Exit 0 healthy, 1 unhealthy,
2 configuration error (trainctl's exit codes).
"""

from __future__ import annotations

import socket
import sys
from datetime import UTC, datetime, timedelta

import redis
from rq import Worker

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


def main() -> int:
    try:
        with connect_configured(load_settings().redis) as client:
            names = healthy_workers(client, socket.gethostname(), datetime.now(UTC))
    except AppError as error:
        sys.stderr.write(f"healthcheck: {error.code}: {error.message}\n")
        return error.exit_code
    sys.stdout.write(f"healthy: {', '.join(names)}\n" if names else "no live worker\n")
    return 0 if names else 1


if __name__ == "__main__":
    sys.exit(main())
