"""The training loop's callbacks for a model run: events, the live progress in Redis, the
per-run eval history, cooperative cancellation, and checkpoints under the retention policy
(written in the background from a CPU snapshot). Progress, evals and the cancel flag go
through a RunReporter, off the training thread; `close()` when training ends.

A resumed run repeats the steps between its last checkpoint and the crash; their progress
and eval figures were already published, so anything at or before the run's watermark (the
last step it published, kept in Redis and only ever raised) is not published again, however
many attempts crash and wherever they restart.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from platform_core.events import (
    MetricsCheckpoint,
    MetricsCheckpointPayload,
    MetricsEval,
    MetricsEvalPayload,
    MetricsProgress,
    MetricsProgressPayload,
)
from platform_core.json_types import JsonObject
from platform_core.layout import CHECKPOINTS, EVAL
from platform_core.specs import RetentionSpec
from trainer_worker import checkpoint_retention
from trainer_worker.checkpoint_retention import (
    DiskProbe,
    apply_plan,
    best_of,
    entries_of,
    estimate_size,
    make_room,
    plan_retention,
)
from trainer_worker.checkpoints import CheckpointMeta, CheckpointWriter
from trainer_worker.job_context import JobContext
from trainer_worker.run_reporter import RunReporter
from trainer_worker.training.callbacks import Callbacks, CheckpointInfo, EvalInfo, ProgressInfo

_log = logging.getLogger(__name__)
# The flag is one Redis read, made on the reporter's thread, every 100 ms: a cancel stops the
# run within a tenth of a second (plus the step in flight). Polling every 50 ms cost a 2-core
# machine 5-10% of its training throughput: each wake-up preempts one of torch's two intra-op
# threads, and the other waits for it (bench/train_overhead.py --only dual_agent --steps 240:
# 0.900-0.942 at 50 ms, 0.961-0.993 at 100 ms).
CANCEL_POLL_S = 0.1
HISTORY_FILE = "history.jsonl"  # in EVAL: DataLayout.eval_history


@dataclass
class RunCallbacks:
    """State shared by the callbacks of one run."""

    context: JobContext
    folder: Path
    retention: RetentionSpec
    watermark: int = -1  # the last step already published (a resumed run's previous life)
    probe: DiskProbe | None = None  # None: the real filesystem (checkpoint_retention.disk_usage)
    fallback_checkpoint_bytes: int = 0  # size estimate before the first checkpoint exists
    should_prune: Callable[[EvalInfo], bool] | None = None  # a study trial's pruner
    writer: CheckpointWriter = field(default_factory=CheckpointWriter)
    reporter: RunReporter = field(init=False)
    _last_saved_step: int | None = None

    def __post_init__(self) -> None:
        self.reporter = RunReporter(self.context.should_stop, poll_interval_s=CANCEL_POLL_S)

    @property
    def checkpoints(self) -> Path:
        return self.folder / CHECKPOINTS

    def callbacks(self) -> Callbacks:
        return Callbacks(
            on_progress=self.on_progress,
            on_eval=self.on_eval,
            on_checkpoint=self.on_checkpoint,
            should_stop=self.should_stop,
            should_prune=self.should_prune,
        )

    def close(self) -> None:
        """Publish what is still queued, then wait for the last checkpoint write."""
        try:
            self.reporter.close()
        finally:
            self.writer.wait()

    def on_progress(self, info: ProgressInfo) -> None:
        if info.step <= self.watermark:
            return
        at = datetime.now(UTC)  # the event's time is the step's, not its publication's
        self.reporter.submit(lambda: self._publish_progress(info, at))

    def _publish_progress(self, info: ProgressInfo, at: datetime) -> None:
        _log.info(
            "step %d/%d loss %.4f",
            info.step,
            info.max_steps,
            info.loss,
            extra={
                "event": "training.progress",
                "step": info.step,
                "loss": info.loss,
                "lr": info.lr,
            },
        )
        payload = MetricsProgressPayload(
            step=info.step,
            epoch=info.epoch,
            loss=info.loss,
            lr=info.lr,
            tokens_per_s=info.tokens_per_s,
            eta_s=info.eta_s,
        )
        context = self.context
        context.publish(
            MetricsProgress(run_id=context.run_id, user_id=context.user_id, payload=payload, ts=at)
        )
        context.progress(
            step=info.step,
            total_steps=info.max_steps,
            epoch=info.epoch,
            eta_s=info.eta_s,
            figures={"loss": round(info.loss, 5), "tokens_per_s": round(info.tokens_per_s, 1)},
        )
        # the run's high-water mark: no later attempt publishes this step again
        self.watermark = context.mark_published(info.step)

    def on_eval(self, info: EvalInfo) -> None:
        at = datetime.now(UTC)
        self.reporter.submit(lambda: self._record_eval(info, at))

    def _record_eval(self, info: EvalInfo, at: datetime) -> None:
        if info.step <= self.watermark and info.step in {
            e["step"] for e in read_history(self.folder)
        }:
            return
        row: JsonObject = {
            "step": info.step,
            "eval_loss": info.eval_loss,
            "perplexity": info.perplexity,
        }
        if info.metrics:  # a language model has none; its rows stay as they were
            row["metrics"] = dict(info.metrics)
        with (self.folder / EVAL / HISTORY_FILE).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        payload = MetricsEvalPayload(
            step=info.step,
            eval_loss=info.eval_loss,
            perplexity=info.perplexity,
            metrics=dict(info.metrics),
        )
        context = self.context
        context.publish(
            MetricsEval(run_id=context.run_id, user_id=context.user_id, payload=payload, ts=at)
        )

    def on_checkpoint(self, info: CheckpointInfo) -> None:
        """Interval saves respect `min_interval_steps`; the final and cancellation saves always
        happen. Room is made before the write; the write itself runs in the background."""
        interval = self.retention.min_interval_steps
        if (
            info.reason == "interval"
            and interval is not None
            and self._last_saved_step is not None
            and info.step - self._last_saved_step < interval
        ):
            return
        needed = estimate_size(self.checkpoints, self.fallback_checkpoint_bytes)
        make_room(
            self.checkpoints,
            needed,
            self.retention,
            probe=self.probe or checkpoint_retention.disk_usage,
        )
        self.writer.submit(
            self.checkpoints,
            self.writer.snapshot(info.model, info.state),
            eval_loss=info.eval_loss,
            on_written=self._written,
        )
        self._last_saved_step = info.step

    def _written(self, meta: CheckpointMeta) -> None:
        """On the writer thread: prune to the policy, then announce the checkpoint, only when
        retention kept it (an announced checkpoint is one a resume can use)."""
        plan = plan_retention(entries_of(self.checkpoints), self.retention)
        apply_plan(self.checkpoints, plan)
        if not plan.keeps(meta.step):
            return
        context = self.context
        payload = MetricsCheckpointPayload(
            step=meta.step,
            path=context.layout.relative(self.checkpoints / meta.name),
            size_bytes=meta.size_bytes,
            sha256=meta.model_sha256,
            is_best=best_of(plan.keep).step == meta.step,
            metric=meta.eval_loss,
        )
        context.publish(
            MetricsCheckpoint(run_id=context.run_id, user_id=context.user_id, payload=payload)
        )
        context.set_live({"last_checkpoint_step": meta.step})

    def should_stop(self) -> bool:
        return self.reporter.stop_requested()


def read_history(folder: Path) -> list[JsonObject]:
    """The run's eval history (every eval of every attempt, one row per step)."""
    path = folder / EVAL / HISTORY_FILE
    if not path.is_file():
        return []
    rows: dict[int, JsonObject] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row: JsonObject = json.loads(line)
        step = row["step"]
        if isinstance(step, int):
            rows[step] = row
    return [rows[step] for step in sorted(rows)]
