"""What the bot remembers about a watched run between messages: the latest progress figures
(progress events are coalesced, the latest wins) and the loss history the chart is drawn from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from platform_core.events import Event, JobProgress, MetricsEval, MetricsProgress

# Points kept for the loss chart. When full, every other point is dropped: the curve keeps
# its shape over the whole run while memory stays bounded on a run of millions of steps.
MAX_LOSS_POINTS = 1_000


@dataclass
class RunSnapshot:
    """The latest figures of one run; None until an event has carried them."""

    run_id: str
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    fraction: float | None = None  # 0..1
    eta_s: float | None = None
    loss: float | None = None
    tokens_per_s: float | None = None
    eval_loss: float | None = None
    perplexity: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss)

    def update(self, event: Event) -> None:
        """Fold a progress or eval event in; other events leave the snapshot as it is."""
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
            self._record_loss(metrics.step, metrics.loss)
        elif isinstance(event, MetricsEval):
            self.eval_loss, self.perplexity = event.payload.eval_loss, event.payload.perplexity

    def _record_loss(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            return  # a diverged step would flatten the whole chart
        self.losses.append((step, loss))
        if len(self.losses) > MAX_LOSS_POINTS:
            self.losses = self.losses[::2]
