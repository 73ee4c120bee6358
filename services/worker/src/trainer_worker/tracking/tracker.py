"""A run's tracker: one more sink of the events the run already publishes, which a
background sender hands to MLflow.

`observe` is all a publishing thread ever does: put the event on an unbounded queue (no
lock, no I/O, no MLflow). The sender thread starts with the run's first event and connects
at once (importing MLflow and opening its store cost a second or two of CPU: done while the
run prepares, not while it trains; a worker imports MLflow before it forks its work horses,
see `backend.preload`). A model run calls `expect_metrics` before it prepares (and otherwise
the first metrics event wakes it) to open the MLflow run at once: the opening, the sender's
largest piece of work, overlaps the run's preparation rather than its first steps. A run that
publishes no metrics (a tokenizer) is not tracked.

Then the sender wakes on a timer, not per event: once a second it turns what arrived into
rows (`event_metrics`) and appends them to the run's buffer (`buffer`: a crash loses at
most the last second), and every `SEND_INTERVAL_S` it sends what the buffer holds with
`log_batch` (at most 1,000 metrics a call). The sender shares the training process's GIL
and its cores: a `log_batch` to SQLite costs ~6 ms of mostly-Python CPU plus ~0.05 ms a
row, so few large batches cost training far less than many small ones (docs/tracking.md).
When MLflow does not answer, rows keep going to the buffer and the sender tries again after
1, 2, 4, 8, 16, 16, ... seconds. After a failed send, and when a new attempt finds rows in
the buffer or continues an earlier MLflow run, it first asks MLflow which (key, step) pairs
it holds and sends only the others: replay is idempotent, so a metric is neither lost nor
duplicated whatever fails when.

`finish` is called by the run's lifecycle once the body returned: it wakes the sender, waits
(up to `final_wait_s`) for it to hand over what it holds, logs the artifacts (manifest, eval
report, a reference to the best checkpoint with its SHA-256), ends the MLflow run, and
reports whether MLflow has everything; a run completes either way.
"""

from __future__ import annotations

import contextvars
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from platform_core.errors import AppError
from platform_core.events import (
    Event,
    JobStarted,
    MetricsCheckpoint,
    MetricsCompleted,
    MetricsConfig,
    MetricsEval,
    MetricsProgress,
)
from platform_core.layout import DataLayout
from platform_core.manifests import (
    TrackingRecord,
    read_run_manifest,
    read_tracking_record,
    write_atomic,
)
from platform_core.settings import TrackingSettings
from trainer_worker.tracking.backend import MlflowBackend, git_commit, host_name
from trainer_worker.tracking.buffer import MetricBuffer
from trainer_worker.tracking.event_metrics import EventMetrics, MetricRow, flatten_params

_log = logging.getLogger(__name__)

BACKOFF_S: Final = (1.0, 2.0, 4.0, 8.0, 16.0)  # the seed's schedule (000 §4), capped at 16 s
# rows reach the buffer file within a second of their event: what a crash can lose
BUFFER_INTERVAL_S: Final = 1.0
# one log_batch every 5 s while MLflow answers: a batch's fixed ~6 ms of Python hold the GIL
# the training thread needs (sending once a second cost a fast run ~0.75% of a core, every
# 5 s ~0.25%); the MLflow UI still trails the run by seconds only
SEND_INTERVAL_S: Final = 5.0
# metrics events start the sender: the body is training, so the run folder exists
_METRICS = (MetricsConfig, MetricsProgress, MetricsEval, MetricsCheckpoint, MetricsCompleted)
EndStatus = Literal["FINISHED", "FAILED", "KILLED"]


def backoff_s(failures: int) -> float:
    """The wait after the `failures`-th failure in a row (1, 2, 4, 8, 16, 16, ...)."""
    return BACKOFF_S[min(max(failures, 1), len(BACKOFF_S)) - 1]


@dataclass(frozen=True, slots=True)
class _Finish:
    status: EndStatus | None  # None: the run goes on in another attempt; its MLflow run too
    deadline: float  # monotonic


@dataclass
class SenderStats:
    """What the sender did, for tests and the benchmark."""

    sent: int = 0  # rows handed to log_batch and confirmed
    sends: int = 0  # confirmed sends of rows (each up to 1,000 rows per log_batch call)
    skipped: int = 0  # rows not sent because MLflow already held their (key, step)
    failures: int = 0  # sends that failed (an outage, however long, counts each try)
    cpu_s: float = 0.0  # CPU time the sender thread used, connecting included
    connect_cpu_s: float = 0.0  # of which connecting (MLflow's import, the store's set-up)


@dataclass(frozen=True, slots=True)
class TrackingReport:
    """How the run's tracking ended: the record for its manifest."""

    record: TrackingRecord

    @property
    def synced(self) -> bool:
        return bool(self.record.synced)

    def describe(self, buffer: str) -> str:
        """A note for the run's message when MLflow did not get everything ("" otherwise);
        `buffer`: where the rest is kept, relative to the data root."""
        if self.synced:
            return ""
        return f"MLflow did not answer: {self.record.pending_metrics} metrics kept in {buffer}"


class Tracker:
    """Tracks one attempt of one run (see the module docstring)."""

    def __init__(
        self,
        *,
        run_id: str,
        kind: str,
        attempt: int,
        layout: DataLayout,
        settings: TrackingSettings,
    ) -> None:
        self.run_id = run_id
        self._layout = layout
        self._settings = settings
        self._inbox: queue.SimpleQueue[Event | _Finish] = queue.SimpleQueue()
        self._wake = threading.Event()  # the sender waits on it: a run starts or ends
        self._thread: threading.Thread | None = None
        self._active = False  # a metrics event was seen: the run is tracked
        self._sender = _Sender(run_id, kind, attempt, layout, MlflowBackend(settings, layout))

    @property
    def stats(self) -> SenderStats:
        return self._sender.stats

    @property
    def tracking(self) -> bool:
        """Whether the run is tracked: it published metrics or is about to train."""
        return self._active

    @property
    def buffer_path(self) -> Path:
        return self._layout.tracking_buffer(self.run_id)

    def observe(self, event: Event) -> None:
        """Hand `event` to the sender; never blocks, never fails."""
        if isinstance(event, JobStarted):
            self._sender.worker = event.payload.worker  # read once a metrics event came
        self._start()
        self._inbox.put(event)
        if not self._active and isinstance(event, _METRICS):
            self._active = True  # the run trains: the sender opens its MLflow run now
            self._wake.set()

    def expect_metrics(self) -> None:
        """The run is about to prepare a model and train it: open its MLflow run now, while
        it prepares, rather than beside its first steps (the opening is the sender's largest
        piece of work, most of it Python that holds the GIL the training thread needs)."""
        self._sender.activate()
        self._start()
        if not self._active:
            self._active = True
            self._wake.set()

    def sync(self, status: EndStatus | None) -> TrackingReport:
        """Hand MLflow what the buffer of a run that has ended holds (`trainctl
        sync-tracking`): the same sender, with no new events, waiting up to
        `final_wait_s`; it ends the MLflow run with `status` again."""
        self._active = True
        self._sender.activate()
        self._start()
        report = self.finish(status)
        assert report is not None  # active: the sender reports
        return report

    def _start(self) -> None:
        if self._thread is not None:
            return
        context = contextvars.copy_context()  # its log records keep the run_id
        self._thread = threading.Thread(
            target=context.run,
            args=(self._sender.run, self._inbox, self._wake),
            name="tracking-sender",
            daemon=True,
        )
        self._thread.start()

    def finish(self, status: EndStatus | None) -> TrackingReport | None:
        """Hand over what is held (waiting up to `final_wait_s`), end the MLflow run with
        `status` (None: leave it running for the run's next attempt); None when the run
        never tracked anything (it published no metrics)."""
        if self._thread is None:
            return None
        wait_s = self._settings.final_wait_s
        self._inbox.put(_Finish(status, time.monotonic() + wait_s))
        self._wake.set()
        if not self._active:  # nothing to hand over: the sender stops once it has connected
            return None
        # the sender gives up at the deadline; the margin covers its last request's timeout
        self._thread.join(timeout=wait_s + self._settings.request_timeout_s + 5)
        if self._thread.is_alive():
            _log.warning("tracking sender still busy at the end", extra={"event": "tracking.late"})
        return self._sender.report()


class _Sender:
    """The sender thread's state; everything here runs on that thread."""

    def __init__(
        self, run_id: str, kind: str, attempt: int, layout: DataLayout, backend: MlflowBackend
    ) -> None:
        self.run_id = run_id
        self.stats = SenderStats()
        self.worker = ""
        self._kind = kind
        self._attempt = attempt
        self._layout = layout
        self._backend = backend
        self._buffer = MetricBuffer(layout.tracking_buffer(run_id))
        self._metrics = EventMetrics(layout.run_dir(run_id))
        self._pending: list[MetricRow] = []
        self._verify = False  # MLflow may hold some pending rows already: ask before sending
        self._record: TrackingRecord | None = None
        self._tags: dict[str, str] = {}
        self._tags_sent = False
        self._params_sent = False
        self._best_checkpoint: MetricsCheckpoint | None = None
        self._failures = 0
        self._outage_logged = False
        self._final: TrackingRecord | None = None
        self._active = False  # a metrics event arrived: the run is tracked

    def activate(self) -> None:
        """Track without waiting for a metrics event (a sync of a run that has ended)."""
        self._active = True

    # ---- the loop ---------------------------------------------------------------------------

    def run(self, inbox: queue.SimpleQueue[Event | _Finish], wake: threading.Event) -> None:
        try:  # connect while the run prepares; a failure here is retried with the first send
            self._backend.warm_up()
        except Exception as exc:  # the store is not there yet: the sends find out and retry
            _log.info("MLflow not reached yet (%s)", type(exc).__name__)
        self._tags.update({"trainer.git_commit": git_commit(), "trainer.host": host_name()})
        self.stats.connect_cpu_s = time.thread_time()
        self._pending = self._buffer.load()
        self._verify = bool(self._pending)  # an earlier attempt may have sent some of them
        if self._pending:
            _log.info(
                "%d buffered metrics to replay",
                len(self._pending),
                extra={"event": "tracking.replay"},
            )
        next_send = 0.0  # the first metrics event opens the MLflow run at once
        finish: _Finish | None = None
        while True:
            # woken by the run's first metrics event and by its end, else once a tick
            wake.wait(BUFFER_INTERVAL_S if finish is None else 0.05)
            wake.clear()  # before taking: a wake that comes after is kept for the next wait
            arrived = self._take(inbox)
            now = time.monotonic()
            if arrived is not None and finish is None:
                finish = arrived
                next_send = now  # the run ended: hand over what is held now
            if finish is not None and not self._active:
                return  # never tracked: nothing to send, nothing to end
            if now >= next_send and self._active:
                if self._send():
                    self._failures = 0
                    next_send = now + SEND_INTERVAL_S
                else:
                    self._failures += 1
                    next_send = now + backoff_s(self._failures)
            if finish is not None and (self._all_sent() or time.monotonic() >= finish.deadline):
                self.stats.cpu_s = time.thread_time()  # this thread's: the sender's own cost
                self._end(finish.status)
                return

    def _take(self, inbox: queue.SimpleQueue[Event | _Finish]) -> _Finish | None:
        """Everything queued, appended to the buffer; the end of the run if it came."""
        finish: _Finish | None = None
        rows: list[MetricRow] = []
        try:
            while True:
                item = inbox.get_nowait()
                if isinstance(item, _Finish):
                    finish = item
                else:
                    rows += self._rows(item)
        except queue.Empty:
            pass
        try:
            self._buffer.append(rows)
        except OSError:  # a full disk: the rows stay in memory, and are sent if MLflow answers
            _log.exception("tracking buffer not written", extra={"event": "tracking.buffer.failed"})
        self._pending += rows
        return finish

    def _rows(self, event: Event) -> list[MetricRow]:
        self._active = self._active or isinstance(event, _METRICS)
        if isinstance(event, MetricsConfig):
            p = event.payload
            self._tags.update(
                {
                    "trainer.model_family": p.model_family,
                    "trainer.device": p.device,
                    "trainer.precision": p.precision,
                }
            )
            self._tags_sent = False
        if isinstance(event, MetricsCheckpoint) and (
            event.payload.is_best or self._best_checkpoint is None
        ):
            self._best_checkpoint = event
        return self._metrics.rows(event)

    def _all_sent(self) -> bool:
        return self._record is not None and not self._pending and self._tags_sent

    # ---- sending ----------------------------------------------------------------------------

    def _send(self) -> bool:
        """Open the MLflow run if need be, then tags, params and every pending row; whether
        all of it went through."""
        try:
            mlflow_run_id = self._open()
            tags = {} if self._tags_sent else dict(self._tags)
            params = self._params()
            rows = self._rows_to_send(mlflow_run_id)
            if tags or params or rows:  # one log_batch call for all of it
                self._backend.log_batch(mlflow_run_id, rows, params=params, tags=tags)
            self._tags_sent = True
            self._params_sent = self._params_sent or bool(params)
            if rows:
                self.stats.sent += len(rows)
                self.stats.sends += 1
            # confirmed: only now may the buffer forget them (a crash before this line leaves
            # rows that MLflow holds, which the next replay recognises and skips)
            if self._pending:
                self._buffer.clear()
                self._pending = []
                self._verify = False
        except Exception as exc:  # any failure of the store is an outage
            self._verify = True  # a failed log_batch may have landed in part
            self.stats.failures += 1
            if not self._outage_logged:
                self._outage_logged = True
                _log.warning(
                    "MLflow does not answer (%s); metrics go to the run's buffer",
                    type(exc).__name__,
                    extra={"event": "tracking.outage", "pending": len(self._pending)},
                )
            return False
        if self._outage_logged:
            self._outage_logged = False
            _log.info("MLflow answers again", extra={"event": "tracking.resumed"})
        return True

    def _open(self) -> str:
        """The MLflow run's id, opening the run first if need be."""
        if self._record is not None and self._record.mlflow_run_id is not None:
            return self._record.mlflow_run_id
        path = self._layout.tracking_record(self.run_id)
        known: TrackingRecord | None = None
        if path.is_file():
            try:
                known = read_tracking_record(path)
            except AppError:
                _log.warning("tracking record unreadable", extra={"event": "tracking.record"})
        self._tags.update(
            {
                "trainer.run_id": self.run_id,
                "trainer.kind": self._kind,
                "trainer.attempt": str(self._attempt),
                "trainer.worker": self.worker,
            }
        )
        record = self._backend.open_run(self.run_id, known, self._tags)
        if known is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, record.model_dump_json(indent=2).encode("utf-8"))
            _log.info(
                "MLflow run %s",
                record.mlflow_run_id,
                extra={"event": "tracking.opened", "mlflow_run_id": record.mlflow_run_id},
            )
        else:  # a later attempt: its MLflow run may hold some of what it repeats
            self._verify = True
        self._record = record
        self._tags_sent = True
        return str(record.mlflow_run_id)

    def _params(self) -> dict[str, str]:
        """The run's params once its manifest is written, until they were sent ({} else)."""
        if self._params_sent:
            return {}
        try:
            manifest = read_run_manifest(self._layout.run_manifest(self.run_id))
        except AppError:  # not written yet (or not a run with a manifest): later
            return {}
        params = flatten_params(manifest.spec)
        if manifest.num_params is not None:
            params["num_params"] = str(manifest.num_params)
        return params

    def _rows_to_send(self, mlflow_run_id: str) -> list[MetricRow]:
        """The pending rows, each (key, step) once, less those MLflow holds already when an
        earlier send or attempt may have delivered some."""
        if not self._pending:
            return []
        rows = list({row.identity: row for row in reversed(self._pending)}.values())[::-1]
        if self._verify:
            held = self._backend.existing(mlflow_run_id, {r.key for r in rows})
            fresh = [row for row in rows if row.identity not in held]
            self.stats.skipped += len(rows) - len(fresh)
            rows = fresh
        return rows

    # ---- the end ----------------------------------------------------------------------------

    def _end(self, status: EndStatus | None) -> None:
        synced = self._all_sent()
        if synced and self._record is not None and self._record.mlflow_run_id is not None:
            try:
                self._log_artifacts(self._record.mlflow_run_id)
                if status is not None:
                    self._backend.terminate(self._record.mlflow_run_id, status)
            except Exception as exc:  # the store went away at the very end
                synced = False
                _log.warning(
                    "MLflow run not closed (%s)",
                    type(exc).__name__,
                    extra={"event": "tracking.unclosed"},
                )
        base = self._record or TrackingRecord()
        self._final = base.model_copy(
            update={"synced": synced, "pending_metrics": len(self._pending)}
        )
        _log.info(
            "tracking ended",
            extra={
                "event": "tracking.ended",
                "synced": synced,
                "pending": len(self._pending),
                "sent": self.stats.sent,
                "skipped": self.stats.skipped,
                "sender_cpu_s": round(self.stats.cpu_s, 3),
                "connect_cpu_s": round(self.stats.connect_cpu_s, 3),
            },
        )

    def _log_artifacts(self, mlflow_run_id: str) -> None:
        layout = self._layout
        for path in (layout.run_manifest(self.run_id), layout.eval_metrics(self.run_id)):
            if path.is_file():
                self._backend.log_artifact(mlflow_run_id, path)
        best = self._best_checkpoint
        if best is not None:
            reference = layout.tracking_dir(self.run_id) / "best_checkpoint.json"
            payload = {
                "step": best.payload.step,
                "path": best.payload.path,  # relative to the data root
                "sha256": best.payload.sha256,
                "size_bytes": best.payload.size_bytes,
                "metric": best.payload.metric,
            }
            write_atomic(reference, json.dumps(payload, indent=2).encode("utf-8"))
            self._backend.log_artifact(mlflow_run_id, reference)

    def report(self) -> TrackingReport | None:
        if self._final is None:  # the sender did not finish in time
            base = self._record or TrackingRecord()
            pending = len(self._pending)
            return TrackingReport(
                base.model_copy(update={"synced": False, "pending_metrics": pending})
            )
        return TrackingReport(self._final)
