"""A consumer process for the crash test: handles events through a consumer group, records
each handled run_id in the Redis list `handled`, and stops on SIGTERM."""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType

import redis

from platform_core.event_bus import EventBus
from platform_core.events import Event


def main(url: str, stream: str, group: str, consumer: str) -> int:
    client = redis.Redis.from_url(url)
    bus = EventBus(client, stream=stream)
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)

    def handle(event: Event) -> None:
        client.rpush("handled", event.run_id)
        time.sleep(0.002)  # a handler that does a little work, so a kill lands mid-stream

    bus.run_consumer(group, consumer, handle, should_stop=lambda: stopping, block_ms=100)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
