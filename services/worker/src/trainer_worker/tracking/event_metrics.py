"""What a run's events become in MLflow: metric rows with the seeds' names, and the spec as
flattened params.

Names follow the seeds' tracking contract (002, "MLflow Tracking Contracts"): `train/...`
per progress report, `val/...` per eval (a family's extra eval metrics, e.g. a dual-agent
run's `criteria_matcher/f1`, become `val/criteria_matcher/f1`), and `system/...`. Every row
is keyed (key, step): the key of idempotent replay.

Nothing here depends on a model family: every family reports through the same typed events.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import JsonValue

from platform_core.events import (
    Event,
    MetricsCheckpoint,
    MetricsEval,
    MetricsProgress,
)

MB: Final = 1_000_000
GB: Final = 1_000_000_000
# MLflow's limits (mlflow.utils.validation): a param key of 250 characters, a value of 6,000
MAX_PARAM_KEY: Final = 250
MAX_PARAM_VALUE: Final = 6_000


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One metric value: MLflow's (key, value, step, timestamp in ms)."""

    key: str
    value: float
    step: int
    timestamp_ms: int

    @property
    def identity(self) -> tuple[str, int]:
        """What makes a row unique within its run: replay never sends one twice."""
        return (self.key, self.step)

    def to_json(self) -> str:
        # NaN/inf as strings: JSON has no NaN, and MLflow stores them as such
        value: float | str = self.value if math.isfinite(self.value) else repr(self.value)
        return json.dumps({"k": self.key, "v": value, "s": self.step, "t": self.timestamp_ms})

    @classmethod
    def from_json(cls, line: str) -> MetricRow:
        raw = json.loads(line)
        return cls(
            key=str(raw["k"]), value=float(raw["v"]), step=int(raw["s"]), timestamp_ms=int(raw["t"])
        )


class EventMetrics:
    """Turns one run's events into metric rows; remembers what `system/epoch_duration_sec`
    needs (when the current epoch began)."""

    def __init__(self, run_folder: Path) -> None:
        self._run_folder = run_folder
        self._epoch: int | None = None  # the whole epoch the last progress report was in
        self._epoch_started_ms: int | None = None

    def rows(self, event: Event) -> list[MetricRow]:
        at = int(event.ts.timestamp() * 1000)
        if isinstance(event, MetricsProgress):
            return self._progress(event, at)
        if isinstance(event, MetricsEval):
            p = event.payload
            rows = [
                MetricRow("val/loss", p.eval_loss, p.step, at),
                MetricRow("val/perplexity", p.perplexity, p.step, at),
            ]
            rows += [MetricRow(f"val/{k}", v, p.step, at) for k, v in sorted(p.metrics.items())]
            return rows
        if isinstance(event, MetricsCheckpoint):
            c = event.payload
            rows = [MetricRow("system/checkpoint_size_mb", c.size_bytes / MB, c.step, at)]
            free = _disk_free_gb(self._run_folder)
            if free is not None:
                rows.append(MetricRow("system/disk_free_gb", free, c.step, at))
            return rows
        return []

    def _progress(self, event: MetricsProgress, at: int) -> list[MetricRow]:
        p = event.payload
        rows = [
            MetricRow("train/loss", p.loss, p.step, at),
            MetricRow("train/lr", p.lr, p.step, at),
            MetricRow("train/tokens_per_s", p.tokens_per_s, p.step, at),
            MetricRow("train/epoch", p.epoch, p.step, at),
        ]
        if p.grad_norm is not None:
            rows.append(MetricRow("train/grad_norm", p.grad_norm, p.step, at))
        epoch = math.floor(p.epoch)
        if self._epoch is None or self._epoch_started_ms is None:
            self._epoch, self._epoch_started_ms = epoch, at
        elif epoch > self._epoch:  # an epoch ended between the previous report and this one
            seconds = (at - self._epoch_started_ms) / 1000
            rows.append(MetricRow("system/epoch_duration_sec", seconds, p.step, at))
            self._epoch, self._epoch_started_ms = epoch, at
        return rows


def _disk_free_gb(folder: Path) -> float | None:
    try:
        return shutil.disk_usage(folder).free / GB
    except OSError:
        return None


def flatten_params(spec: dict[str, JsonValue], prefix: str = "") -> dict[str, str]:
    """A nested spec as MLflow params: `train.learning_rate` -> "0.0003"; lists as JSON;
    values cut to MLflow's limit (a long prompt list is a param, not a failure)."""
    flat: dict[str, str] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"[:MAX_PARAM_KEY]
        if isinstance(value, dict):
            flat.update(flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, str):
            flat[name] = value[:MAX_PARAM_VALUE]
        else:
            flat[name] = json.dumps(value)[:MAX_PARAM_VALUE]
    return flat
