"""Heartbeats from a thread of their own, so a long eval, save or compile in the training
thread is never taken for a dead worker."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import redis

from platform_core.run_state import RunStateStore

_log = logging.getLogger(__name__)


class Heartbeat:
    """`with Heartbeat(store, run_id, interval_s):` beats at once, then every interval."""

    def __init__(self, store: RunStateStore, run_id: str, interval_s: float) -> None:
        self._store = store
        self._run_id = run_id
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._store.beat(self._run_id)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval_s + 1)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._store.beat(self._run_id)
            except redis.RedisError:  # a blip must not kill the beat; the next one retries
                _log.warning(
                    "heartbeat failed", extra={"event": "heartbeat.failed", "run_id": self._run_id}
                )
