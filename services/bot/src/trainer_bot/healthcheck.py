"""`python -m trainer_bot.healthcheck`: the bot container's health check.

Healthy means the bot on this host stamped its heartbeat (see `heartbeat`) recently from both
notifier loops and its session is connected. Exit 0 healthy, 1 unhealthy (the reason on one
line), 2 configuration error (trainctl's exit codes), like the worker's check.
"""

from __future__ import annotations

import socket
import sys
import time

from platform_core.errors import AppError
from platform_core.redis_connection import connect_configured
from platform_core.settings import load_settings
from trainer_bot.heartbeat import heartbeat_key, unhealthy_reason


def main() -> int:
    try:
        client = connect_configured(load_settings().redis)
    except AppError as error:
        sys.stderr.write(f"healthcheck: {error.code}: {error.message}\n")
        return error.exit_code
    with client:
        fields = client.hgetall(heartbeat_key(socket.gethostname()))
    reason = unhealthy_reason(fields, time.time())
    sys.stdout.write(f"unhealthy: {reason}\n" if reason else "healthy\n")
    return 0 if reason is None else 1


if __name__ == "__main__":
    sys.exit(main())
