"""A run's events survive a Redis outage: published in order, held on disk while Redis does
not answer, and sent (oldest first, with their own ids) once it does.

Training does not wait for Redis. While the spool holds anything, a new event joins the end
of the queue (never overtaking an older one) and a background thread retries with
exponential back-off and jitter. Each held event is also written to a file, so an attempt
that dies during the outage leaves its events to the next attempt of the run, which sends
them before its own. `healthy` tells the other per-step Redis calls (live progress, the
cancel flag) to skip a round trip that would only time out.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from pathlib import Path

import redis

from platform_core.event_bus import EventBus
from platform_core.events import Event, EventDecodeError, decode_event, encode_event
from platform_core.manifests import write_atomic

_log = logging.getLogger(__name__)

REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
FIRST_RETRY_S = 0.5  # a blip is usually over in about a second
MAX_RETRY_S = 10.0  # how late events may arrive once Redis is back


class EventSpool:
    """Publishes a run's events on `bus`; holds them in `path` while Redis is down."""

    def __init__(self, bus: EventBus, path: Path) -> None:
        self._bus = bus
        self._path = path
        self._lock = threading.Lock()  # the training thread and the checkpoint writer publish
        self._pending: deque[Event] = deque(_load(path))
        self._flusher: threading.Thread | None = None
        self._closed = threading.Event()
        if self._pending:
            _log.warning(
                "%d events held from an earlier attempt",
                len(self._pending),
                extra={"event": "spool.recovered"},
            )

    @property
    def healthy(self) -> bool:
        """Whether Redis answered the last time (nothing is held)."""
        return not self._pending

    @property
    def held(self) -> int:
        return len(self._pending)

    def publish(self, event: Event) -> None:
        with self._lock:
            if not self._pending:
                try:
                    self._bus.publish(event)
                    return
                except REDIS_DOWN:
                    _log.warning(
                        "Redis does not answer; holding events until it does",
                        extra={"event": "spool.holding"},
                    )
            self._pending.append(event)
            self._save()
            self._start_flusher()

    def flush(self, *, timeout_s: float) -> bool:
        """Send everything held, retrying for up to `timeout_s`; whether nothing is left."""
        deadline = time.monotonic() + timeout_s
        delay = FIRST_RETRY_S
        while not self._send_held():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, _jittered(delay)))
            delay = min(delay * 2, MAX_RETRY_S)
        return True

    def close(self) -> None:
        """Stop the background retries; what is still held stays in the file."""
        self._closed.set()
        if self._flusher is not None:
            self._flusher.join(timeout=MAX_RETRY_S)

    def _start_flusher(self) -> None:
        if self._flusher is not None and self._flusher.is_alive():
            return
        self._flusher = threading.Thread(target=self._retry, name="event-spool", daemon=True)
        self._flusher.start()

    def _retry(self) -> None:
        delay = FIRST_RETRY_S
        while not self._closed.wait(_jittered(delay)):
            if self._send_held():
                _log.info("Redis answers again; held events sent", extra={"event": "spool.sent"})
                return
            delay = min(delay * 2, MAX_RETRY_S)

    def _send_held(self) -> bool:
        """Send held events oldest first; whether none is left."""
        with self._lock:
            sent = 0
            try:
                while self._pending:
                    self._bus.publish(self._pending[0])
                    self._pending.popleft()
                    sent += 1
            except REDIS_DOWN:
                return False
            finally:
                if sent:
                    self._save()
            return True

    def _save(self) -> None:
        """The file holds exactly what is still held (none: no file)."""
        if not self._pending:
            self._path.unlink(missing_ok=True)
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self._path, b"".join(encode_event(e) + b"\n" for e in self._pending))


def _load(path: Path) -> list[Event]:
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    events: list[Event] = []
    for line in lines:
        try:
            events.append(decode_event(line))
        except EventDecodeError:  # a line cut by a crash: the file is rewritten whole, so rare
            _log.warning("unreadable held event skipped", extra={"event": "spool.unreadable"})
    return events


def _jittered(delay: float) -> float:
    return delay * random.uniform(0.8, 1.2)  # noqa: S311 - spreading retries, not a secret
