"""Render a run's events as a live progress line (TTY) or as plain lines (logs, CI)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO

from platform_core.events import (
    Event,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobProgress,
    JobQueued,
    JobStarted,
    MetricsCheckpoint,
    MetricsCompleted,
    MetricsConfig,
    MetricsEval,
    MetricsProgress,
)

BAR_WIDTH = 28


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    whole = int(max(0.0, seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_status(
    fraction: float,
    step: int,
    total: int | None,
    *,
    loss: float | None,
    tokens_per_s: float | None,
    eta_s: float | None,
) -> str:
    """`42.0% step 420/1000 loss 2.1234 12,345 tok/s ETA 01:05`: a run's progress in a line."""
    parts = [f"{fraction * 100:5.1f}%"]
    parts.append(f"step {step}/{total}" if total else f"step {step}")
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if tokens_per_s is not None:
        parts.append(f"{tokens_per_s:,.0f} tok/s")
    parts.append(f"ETA {format_duration(eta_s)}")
    return " ".join(parts)


def format_number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "·" * (width - filled)


@dataclass
class ProgressView:
    """Keeps the latest figures of one run and writes what changed."""

    out: TextIO = field(default_factory=lambda: sys.stderr)
    live: bool | None = None  # None: redraw in place when `out` is a terminal
    fraction: float = 0.0
    step: int = 0
    total: int | None = None
    loss: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    evals: list[tuple[int, float]] = field(default_factory=list)  # (step, perplexity)
    _last_plain_decile: int = -1
    _drawn: bool = False

    def __post_init__(self) -> None:
        if self.live is None:
            self.live = self.out.isatty()

    def handle(self, event: Event) -> None:
        if isinstance(event, JobProgress):
            self.fraction = event.payload.fraction
            self.step, self.total = event.payload.step, event.payload.total_steps
            self.eta_s = event.payload.eta_s
            self._draw()
        elif isinstance(event, MetricsProgress):
            self.loss, self.tokens_per_s = event.payload.loss, event.payload.tokens_per_s
        elif isinstance(event, MetricsEval):
            self.evals.append((event.payload.step, event.payload.perplexity))
            self._line(
                f"eval @ step {event.payload.step}: loss {event.payload.eval_loss:.4f}, "
                f"perplexity {event.payload.perplexity:.2f}"
            )
        else:
            self._line(describe(event))

    def _status(self) -> str:
        return format_status(
            self.fraction,
            self.step,
            self.total,
            loss=self.loss,
            tokens_per_s=self.tokens_per_s,
            eta_s=self.eta_s,
        )

    def _draw(self) -> None:
        if self.live:
            self.out.write(f"\r{render_bar(self.fraction)} {self._status()}\x1b[K")
            self._drawn = True
            self.out.flush()
            return
        decile = int(self.fraction * 10)
        if decile > self._last_plain_decile:
            self._last_plain_decile = decile
            self._line(self._status())

    def _line(self, text: str) -> None:
        if self._drawn:
            self.out.write("\n")
            self._drawn = False
        self.out.write(text + "\n")
        self.out.flush()


def describe(event: Event) -> str:
    """One line for a lifecycle or metrics event."""
    text: str = event.type
    if isinstance(event, JobQueued):
        text = f"queued on '{event.payload.queue}'"
    elif isinstance(event, JobStarted):
        text = f"started on {event.payload.worker} (attempt {event.payload.attempt})"
    elif isinstance(event, JobCompleted):
        text = f"completed in {format_duration(event.payload.duration_s)}: {event.payload.message}"
    elif isinstance(event, JobFailed):
        retry = " (will retry)" if event.payload.retrying else ""
        text = f"failed [{event.payload.error_code}]{retry}: {event.payload.message}"
    elif isinstance(event, JobCancelled):
        text = f"cancelled ({event.payload.stage}): {event.payload.message}"
    elif isinstance(event, MetricsConfig):
        p = event.payload
        text = (
            f"{p.model_family} {p.preset or ''}: {p.num_params:,} params, vocab {p.vocab_size}, "
            f"{p.max_steps} steps on {p.device} ({p.precision})"
        )
    elif isinstance(event, MetricsCheckpoint):
        best = " (best)" if event.payload.is_best else ""
        text = (
            f"checkpoint @ step {event.payload.step}{best}: {event.payload.size_bytes / 1e6:.1f} MB"
        )
    elif isinstance(event, MetricsCompleted):
        ppl = event.payload.final_perplexity
        text = f"training done: {event.payload.steps} steps" + (
            f", perplexity {ppl:.2f}" if ppl is not None else ""
        )
    return text
