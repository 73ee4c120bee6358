"""What the bot remembers about a watched run between messages: the figures its live status
message shows (progress events are folded in, the latest wins). Saved with the live message's
id (see `live_store`), so a restarted bot edits the same message with the same figures.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from platform_core.events import (
    Event,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobProgress,
    JobStarted,
    MetricsCheckpoint,
    MetricsCompleted,
    MetricsConfig,
    MetricsEval,
    MetricsProgress,
)


@dataclass
class RunSnapshot:
    """The latest figures of one run; None until an event has carried them."""

    run_id: str
    status: str = "queued"
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    fraction: float | None = None  # 0..1
    eta_s: float | None = None
    loss: float | None = None
    tokens_per_s: float | None = None  # the latest rate; the run's average once it finished
    eval_loss: float | None = None
    perplexity: float | None = None
    best_eval_loss: float | None = None
    last_checkpoint_step: int | None = None
    ended_at: float | None = None  # UNIX seconds of the event that ended the run
    # a classifying run's final figures (dual_agent: "test/..." and "baseline/..." names)
    final_metrics: dict[str, float] | None = None

    def update(self, event: Event) -> bool:
        """Fold `event` in; True when it is a new best eval loss."""
        if isinstance(event, JobProgress | MetricsProgress) and self.status == "queued":
            self.status = "running"  # a run watched mid-run (`/watch`) never saw its start
        if isinstance(event, JobProgress):
            job = event.payload
            self.step, self.epoch, self.fraction = job.step, job.epoch, job.fraction
            self.total_steps = job.total_steps or self.total_steps
            self.eta_s = job.eta_s if job.eta_s is not None else self.eta_s
        elif isinstance(event, MetricsProgress):
            metrics = event.payload
            self.step, self.epoch, self.loss = metrics.step, metrics.epoch, metrics.loss
            self.tokens_per_s = metrics.tokens_per_s
            self.eta_s = metrics.eta_s if metrics.eta_s is not None else self.eta_s
            if self.total_steps:
                self.fraction = min(1.0, metrics.step / self.total_steps)
        elif isinstance(event, MetricsConfig):
            self.total_steps = event.payload.max_steps
        elif isinstance(event, MetricsEval):
            self.eval_loss, self.perplexity = event.payload.eval_loss, event.payload.perplexity
            if self.best_eval_loss is None or event.payload.eval_loss < self.best_eval_loss:
                self.best_eval_loss = event.payload.eval_loss
                return True
        elif isinstance(event, MetricsCheckpoint):
            self.last_checkpoint_step = event.payload.step
        elif isinstance(event, MetricsCompleted):
            done = event.payload
            self.step = done.steps
            self.loss = done.final_loss if done.final_loss is not None else self.loss
            # one throughput per run: the worker's average over the whole run wins
            self.tokens_per_s = done.tokens_per_s or self.tokens_per_s
            self.final_metrics = dict(done.metrics) or self.final_metrics
        else:
            self._lifecycle(event)
        return False

    def _lifecycle(self, event: Event) -> None:
        if isinstance(event, JobStarted):
            self.status = "running"
        elif isinstance(event, JobCompleted | JobFailed | JobCancelled) and event.ends_run:
            self.status = {JobCompleted: "completed", JobFailed: "failed"}.get(
                type(event), "cancelled"
            )
            self.ended_at = event.ts.timestamp()
            if isinstance(event, JobCompleted):
                self.fraction, self.eta_s = 1.0, None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> RunSnapshot:
        """A saved snapshot; fields it does not know are ignored."""
        loaded: object = json.loads(text)
        if not isinstance(loaded, dict):
            raise ValueError("a saved run snapshot must be a JSON object")
        known = {f.name for f in fields(cls)}
        snapshot = cls(run_id=str(loaded["run_id"]))
        for name, value in loaded.items():
            if name in known and name != "run_id":
                setattr(snapshot, name, value)
        return snapshot
