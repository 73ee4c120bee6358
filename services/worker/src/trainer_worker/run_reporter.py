"""A training run's Redis traffic, kept off the training thread: the cancel flag, polled on a
timer, and the run's progress and eval publications, run in the order they were handed over.

A step of a small model takes a few milliseconds on a CPU, while a Redis round trip takes
~0.2 ms locally (more across a network) and a progress report (two events and a hash) about
a millisecond: done inline, that bookkeeping costs several percent of the run's throughput.
Here the training thread only reads a flag and queues work.

An error on the reporter's thread (Redis gone) is raised on the training thread at its next
call, so the run fails as it did when the calls were inline. The queue is bounded: a
reporter that falls behind (a report every step of a fast model) holds the training thread
back rather than letting it run far ahead of what the run has published.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable

# Eight reports in flight: a burst is absorbed; a steady backlog slows the training thread
# down to the pace of its reports, as inline publishing did.
MAX_PENDING = 8

Work = Callable[[], None]


class RunReporter:
    """Polls `poll_cancel` every `poll_interval_s` and runs submitted work, in order, on a
    thread of its own, started on first use. `close()` runs what is left and stops it."""

    def __init__(self, poll_cancel: Callable[[], bool], *, poll_interval_s: float) -> None:
        self._poll_cancel = poll_cancel
        self._interval_s = poll_interval_s
        self._queue: queue.Queue[Work | None] = queue.Queue(maxsize=MAX_PENDING)
        self._cancelled = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def stop_requested(self) -> bool:
        """Whether the cancel flag was seen raised: a read of a flag, no round trip."""
        self._ensure_started()
        return self._cancelled.is_set()

    def submit(self, work: Work) -> None:
        """Run `work` on the reporter's thread after everything submitted before it."""
        self._ensure_started()
        self._queue.put(work)

    def close(self) -> None:
        """Run what was submitted, stop the thread, and raise the first error it met."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._raise_error()

    def _ensure_started(self) -> None:
        self._raise_error()
        if self._thread is not None:
            return
        # the first poll inline: a run cancelled while it prepared stops before its first step
        self._poll()
        self._raise_error()
        # log records from the thread keep the run's context (run_id), as inline calls did
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name="run-reporter", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        next_poll = time.monotonic() + self._interval_s
        while True:
            if time.monotonic() >= next_poll:
                self._poll()
                next_poll = time.monotonic() + self._interval_s
            try:
                work = self._queue.get(timeout=max(0.0, next_poll - time.monotonic()))
            except queue.Empty:
                continue
            if work is None:
                return
            self._guarded(work)

    def _poll(self) -> None:
        def poll() -> None:
            if self._poll_cancel():
                self._cancelled.set()

        self._guarded(poll)

    def _guarded(self, work: Work) -> None:
        try:
            work()
        except Exception as error:  # handed to the training thread; the first one is kept
            if self._error is None:
                self._error = error

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error
