"""A run's chart, from its stored metric history (the whole run, not a tail): training loss
(raw, light, and an exponentially smoothed line), eval loss as markers and the learning rate
on a second axis, downsampled to at most `MAX_POINTS` per series.

The history is the run folder's own record: the worker's `training.progress` lines in
`logs.jsonl` (step, loss and, when logged, lr) and `eval/history.jsonl` (one row per eval).
matplotlib is imported on the first chart only, with the Agg backend: the API starts without
it, and the API never imports torch.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from trainer_api.log_files import LOG_FILE

PROGRESS_EVENT = b'"training.progress"'  # only these log lines carry a training loss
HISTORY_FILE = Path("eval") / "history.jsonl"
MAX_POINTS = 2_000  # per series: more than a 600-pixel-wide chart can show
SMOOTHING = 0.9  # EMA weight of the past: a line that shows the trend through noisy steps
MIN_POINTS = 2  # one point is not a curve
_SIZE_IN = (8.0, 4.0)
_DPI = 100


@dataclass
class RunHistory:
    train: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    lr: list[tuple[int, float]] = field(default_factory=list)  # (step, learning rate)
    evals: list[tuple[int, float]] = field(default_factory=list)  # (step, eval loss)


def read_history(folder: Path) -> RunHistory:
    """Every training step and eval the run recorded, in step order (a resumed run's repeated
    steps: the last attempt wins)."""
    train: dict[int, float] = {}
    lr: dict[int, float] = {}
    try:
        with (folder / LOG_FILE).open("rb") as logs:
            for raw in logs:
                if PROGRESS_EVENT not in raw:
                    continue
                record = _json_object(raw)
                step, loss = record.get("step"), _number(record.get("loss"))
                if isinstance(step, int) and loss is not None:
                    train[step] = loss
                    rate = _number(record.get("lr"))
                    if rate is not None:
                        lr[step] = rate
    except FileNotFoundError:
        pass
    evals: dict[int, float] = {}
    try:
        for raw in (folder / HISTORY_FILE).read_bytes().splitlines():
            record = _json_object(raw)
            step, value = record.get("step"), _number(record.get("eval_loss"))
            if isinstance(step, int) and value is not None:
                evals[step] = value
    except FileNotFoundError:
        pass
    return RunHistory(sorted(train.items()), sorted(lr.items()), sorted(evals.items()))


def _json_object(raw: bytes) -> dict[str, object]:
    try:
        loaded: object = json.loads(raw)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _number(value: object) -> float | None:
    """`value` as a finite float; None for anything else (a diverged step, a missing field)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average, bias-corrected so the line starts at the first value."""
    out: list[float] = []
    average = 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return out


def downsample(points: list[tuple[int, float]], limit: int = MAX_POINTS) -> list[tuple[int, float]]:
    """At most `limit` points, evenly spread over the run, the first and last kept."""
    if len(points) <= limit:
        return points
    last = len(points) - 1
    return [points[round(i * last / (limit - 1))] for i in range(limit)]


def chart_png(title: str, history: RunHistory) -> bytes | None:
    """The chart as a PNG; None when the run has fewer than two training steps recorded."""
    if len(history.train) < MIN_POINTS:
        return None
    import matplotlib  # noqa: PLC0415 - lazy: only a chart needs it

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # noqa: PLC0415 - after the backend is chosen

    steps = [step for step, _ in history.train]
    trend = list(zip(steps, smoothed([loss for _, loss in history.train]), strict=True))
    raw = downsample(history.train)
    trend = downsample(trend)
    # a bare Figure (not pyplot) is never registered globally, so nothing leaks between calls
    figure = Figure(figsize=_SIZE_IN, dpi=_DPI)
    axes = figure.add_subplot()
    axes.plot(*zip(*raw, strict=True), linewidth=0.8, alpha=0.3, color="#5865F2", label="loss")
    axes.plot(*zip(*trend, strict=True), linewidth=1.8, color="#5865F2", label="loss (smoothed)")
    if history.evals:
        evals = downsample(history.evals)
        axes.plot(*zip(*evals, strict=True), "o", color="#ED4245", markersize=4, label="eval loss")
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    if len(history.lr) >= MIN_POINTS:
        lr_axes = axes.twinx()
        lr_line = lr_axes.plot(
            *zip(*downsample(history.lr), strict=True), color="#57F287", linewidth=1.0
        )
        lr_axes.set_ylabel("learning rate")
        handles += lr_line
        labels.append("learning rate")
    axes.legend(handles, labels, loc="upper right", fontsize="small")
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
