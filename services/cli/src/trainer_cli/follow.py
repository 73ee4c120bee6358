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


def follow_run(client: TrainerClient, run_id: str, on_event: Callable[[Event], None]) -> int:
    """Pass each event of `run_id`, from its start, to `on_event` until its terminal event;
    the exit code of the run's outcome. A stream that drops is resumed with Last-Event-ID."""
    last_id: str | None = None
    failures = 0
    while True:
        try:
            for item in client.stream_events(run_id, last_id):
                last_id, failures = item.id, 0
                on_event(item.event)
                if item.event.ends_run:
                    return exit_code_of(item.event)
        except ApiError as error:
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
    if status == "completed":
        return ExitCode.OK
    if status == "cancelled":
        return ErrorCode.CANCELLED.exit_code
    return ExitCode.TRAINING  # failed, with its code no longer on the bus
