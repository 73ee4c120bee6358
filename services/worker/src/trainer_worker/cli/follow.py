"""Follow one run on the event bus until its terminal event."""

from __future__ import annotations

from collections.abc import Callable

from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import TERMINAL_TYPES, Event, JobFailed


def follow_run(
    bus: EventBus,
    run_id: str,
    on_event: Callable[[Event], None],
    *,
    after_id: str = "0-0",
    still_alive: Callable[[], bool] = lambda: True,
) -> Event:
    """Pass each event of `run_id` after `after_id` to `on_event`; return the terminal one.
    `still_alive` is polled while nothing arrives, so a dead worker ends the wait."""
    cursor = after_id
    while True:
        deliveries = bus.read(cursor, count=500, block_ms=500)
        if not deliveries and not still_alive():
            raise AppError(
                ErrorCode.UPSTREAM_UNAVAILABLE, "the worker stopped before the run ended"
            )
        for delivery in deliveries:
            cursor = delivery.id
            if delivery.event.run_id != run_id:
                continue
            on_event(delivery.event)
            if delivery.event.type in TERMINAL_TYPES and not _will_retry(delivery.event):
                return delivery.event


def _will_retry(event: Event) -> bool:
    return isinstance(event, JobFailed) and event.payload.retrying
