"""Follow one run through the API's event stream (SSE) until it ends, and turn its outcome
into the CLI contract's exit code."""

from __future__ import annotations

import time
from collections.abc import Callable

from platform_core.errors import ErrorCode, ExitCode
from platform_core.events import Event, JobCancelled, JobFailed
from platform_core.http_client import ApiError, TrainerClient

# a dropped stream is resumed from its last event id; this many reconnects in a row without an
# event in between means the API is gone, not a blip
MAX_RECONNECTS = 5
RECONNECT_DELAY_S = 0.5  # times the number of failed reconnects so far
# the API answers but its Redis does not (a restart, a failover): the run goes on meanwhile,
# so wait for Redis this long, asking again every few seconds, before giving up
REDIS_WAIT_S = 300.0
REDIS_RETRY_S = 2.0


def follow_run(client: TrainerClient, run_id: str, on_event: Callable[[Event], None]) -> int:
    """Pass each event of `run_id`, from its start, to `on_event` until its terminal event;
    the exit code of the run's outcome. A stream that drops is resumed with Last-Event-ID;
    while the API's Redis does not answer, it waits (up to REDIS_WAIT_S) and resumes."""
    last_id: str | None = None
    failures = 0
    redis_down_since: float | None = None
    while True:
        try:
            for item in client.stream_events(run_id, last_id):
                last_id, failures, redis_down_since = item.id, 0, None
                on_event(item.event)
                if item.event.ends_run:
                    return exit_code_of(item.event)
        except ApiError as error:
            if error.error_code is ErrorCode.REDIS_UNAVAILABLE:
                now = time.monotonic()
                redis_down_since = redis_down_since or now
                if now - redis_down_since > REDIS_WAIT_S:
                    raise
                time.sleep(REDIS_RETRY_S)
                continue
            if error.status != 0 or failures >= MAX_RECONNECTS:
                raise
            failures += 1
            time.sleep(RECONNECT_DELAY_S * failures)
            continue
        # The API ended the stream without a terminal event: the run ended and its terminal
        # event was trimmed from the bus; its status says how.
        return _exit_code_of_status(client.get_run(run_id).status)


def exit_code_of(event: Event) -> int:
    """The exit code of a terminal event: 0 completed, a failure's own code, or CANCELLED's."""
    if isinstance(event, JobFailed):
        return event.payload.error_code.exit_code
    if isinstance(event, JobCancelled):
        return ErrorCode.CANCELLED.exit_code
    return ExitCode.OK


def _exit_code_of_status(status: str) -> int:
    if status in ("completed", "pruned"):  # a pruned trial ended as its study designed
        return ExitCode.OK
    if status == "cancelled":
        return ErrorCode.CANCELLED.exit_code
    return ExitCode.TRAINING  # failed, with its code no longer on the bus
