"""Heartbeats from a thread of their own, so a long eval, save or compile in the training
thread is never taken for a dead worker.

One thread per process beats for every run that is inside a `Heartbeat` (a study's trial
beats for itself and its study): entering one costs a beat, not a thread start, which a
worker running many short jobs (a study's trials) would pay for every job.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from types import TracebackType

import redis

from platform_core.run_state import RunStateStore

_log = logging.getLogger(__name__)


class Heartbeat:
    """`with Heartbeat(store, run_id, interval_s):` beats at once, then every interval until
    the block ends; no beat follows the block's end."""

    def __init__(self, store: RunStateStore, run_id: str, interval_s: float) -> None:
        self._beat = _Beat(store, run_id, interval_s)

    def __enter__(self) -> Heartbeat:
        self._beat.store.beat(self._beat.run_id)
        _BEATER.add(self._beat)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _BEATER.remove(self._beat)


@dataclass(eq=False)  # each entry is itself: two for one run are two entries
class _Beat:
    store: RunStateStore
    run_id: str
    interval_s: float
    due: float = 0.0  # monotonic time of the next beat

    def send(self) -> None:
        try:
            self.store.beat(self.run_id)
        except Exception as exc:  # the one beat thread serves every run of the process: a
            # blip (or anything else) must not end it; the next beat retries
            _log.warning(
                "heartbeat failed",
                extra={
                    "event": "heartbeat.failed",
                    "run_id": self.run_id,
                    "error": type(exc).__name__,
                    "redis": isinstance(exc, redis.RedisError),
                },
            )


class _Beater:
    """The process's beat thread and the beats it owes, each at its own interval. It beats
    under the lock, so `remove` returns only once no beat of that entry is under way."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked job starts its own thread

    def _reset(self) -> None:
        self._lock = threading.Condition()
        self._beats: list[_Beat] = []
        self._thread: threading.Thread | None = None

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def add(self, beat: _Beat) -> None:
        with self._lock:
            beat.due = time.monotonic() + beat.interval_s
            self._beats.append(beat)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
                self._thread.start()
            self._lock.notify()  # its interval may be the shortest

    def remove(self, beat: _Beat) -> None:
        with self._lock:
            self._beats.remove(beat)

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                for beat in self._beats:
                    if beat.due <= now:
                        beat.send()
                        beat.due = now + beat.interval_s
                next_due = min((beat.due for beat in self._beats), default=None)
                self._lock.wait(None if next_due is None else max(next_due - now, 0.0))


_BEATER = _Beater()
