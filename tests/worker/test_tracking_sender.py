"""The sender's cadence against the real default store (SQLite under the data root): the
run's first metrics event opens its MLflow run at once, rows then reach the buffer file
every second while MLflow gets them in few large batches, and the end of the run hands over
the rest at once. Also what `preload` imports (a worker calls it before it forks its work
horses: `tests/worker/test_worker_process.py`)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from platform_core.events import (
    JobStarted,
    JobStartedPayload,
    MetricsConfig,
    MetricsProgress,
    MetricsProgressPayload,
)
from platform_core.layout import DataLayout
from platform_core.settings import TrackingSettings
from tests.platform_core.event_samples import samples
from trainer_worker.tracking import tracker as tracker_module
from trainer_worker.tracking.backend import MlflowBackend, preload
from trainer_worker.tracking.buffer import MetricBuffer
from trainer_worker.tracking.event_metrics import MetricRow
from trainer_worker.tracking.tracker import Tracker

RUN = "run-cadence"


def _wait_for(condition: Callable[[], bool], timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _tracker(layout: DataLayout) -> Tracker:
    return Tracker(
        run_id=RUN,
        kind="train_model",
        attempt=1,
        layout=layout,
        settings=TrackingSettings(final_wait_s=60),
    )


def _config() -> MetricsConfig:
    return next(e for e in samples() if isinstance(e, MetricsConfig))  # the run's first metric


def _progress(step: int) -> MetricsProgress:
    payload = MetricsProgressPayload(step=step, epoch=0.0, loss=1.0, lr=1e-3, tokens_per_s=1e3)
    return MetricsProgress(run_id=RUN, payload=payload)


@pytest.mark.integration
def test_the_first_metrics_event_opens_the_run_and_later_rows_wait_in_the_buffer(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no periodic send during the test: what reaches MLflow before the end is the opening
    monkeypatch.setattr(tracker_module, "SEND_INTERVAL_S", 3600.0)
    layout = DataLayout(data_root)
    tracker = _tracker(layout)
    started = JobStartedPayload(kind="train_model", worker="host:1", attempt=1)
    tracker.observe(JobStarted(run_id=RUN, payload=started))
    tracker.observe(_config())
    tracker.observe(_progress(1))
    _wait_for(lambda: tracker.stats.sends == 1)  # opened, its first rows sent
    assert layout.tracking_record(RUN).is_file() and tracker.stats.sent == 4

    for step in range(2, 6):  # the run trains on: a tick appends, no send
        tracker.observe(_progress(step))
    buffer = MetricBuffer(layout.tracking_buffer(RUN))
    _wait_for(lambda: len(buffer.load()) == 16)
    assert tracker.stats.sends == 1 and tracker.stats.sent == 4

    report = tracker.finish("FINISHED")  # the end wakes the sender: the rest goes at once
    assert report is not None and report.synced
    assert tracker.stats.sends == 2 and tracker.stats.sent == 20
    assert buffer.load() == []


LOADED = "print('mlflow' in sys.modules, 'mlflow.store.tracking.sqlalchemy_store' in sys.modules)\n"


def test_preload_for_a_server_leaves_the_sqlite_store_unloaded() -> None:
    probe = (
        "import sys\n"
        "from platform_core.settings import TrackingSettings\n"
        "from trainer_worker.tracking.backend import preload\n"
        "preload(TrackingSettings(uri=sys.argv[1]))\n"
    ) + LOADED
    done = subprocess.run(
        [sys.executable, "-c", probe, "https://mlflow.example.com"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.split() == ["True", "False"]
    preload(TrackingSettings(uri="https://mlflow.example.com"))  # in-process too, for coverage
    preload(TrackingSettings())
    assert "mlflow.store.tracking.sqlalchemy_store" in sys.modules


@pytest.mark.integration
def test_a_run_about_to_train_opens_its_mlflow_run_before_any_metrics_event(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`expect_metrics` (called by every model family before it prepares): the opening
    happens while the run prepares, not beside its first steps; a second call changes
    nothing, and the metrics that follow go to the run it opened."""
    monkeypatch.setattr(tracker_module, "SEND_INTERVAL_S", 3600.0)
    layout = DataLayout(data_root)
    tracker = _tracker(layout)
    tracker.expect_metrics()
    _wait_for(layout.tracking_record(RUN).is_file, 30.0)  # opened with no event at all
    assert tracker.stats.sends == 0  # opened: no rows yet, no batch sent
    tracker.expect_metrics()
    tracker.observe(_config())
    tracker.observe(_progress(1))
    report = tracker.finish("FINISHED")
    assert report is not None and report.synced
    assert tracker.stats.sends == 1 and tracker.stats.sent == 4


@pytest.mark.integration
def test_tags_params_and_metrics_go_in_as_few_log_batch_calls_as_mlflows_limits_allow(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each `log_batch` costs the sender a fixed few milliseconds of Python: a send carries
    tags, params and rows in one call, and more than MLflow takes in one call (1,000
    entities, 100 params, 100 tags) is split so that every call stays within them and all
    of it arrives."""
    from mlflow import MlflowClient  # noqa: PLC0415 - the store itself, to count and read
    from mlflow.entities import Metric, Param, RunTag  # noqa: PLC0415

    layout = DataLayout(data_root)
    backend = MlflowBackend(TrackingSettings(), layout)
    record = backend.open_run(RUN, None, {"trainer.kind": "train_model"})
    run = str(record.mlflow_run_id)
    calls: list[tuple[int, int, int]] = []
    original = MlflowClient.log_batch

    def counting(
        self: MlflowClient,
        run_id: str,
        *,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
        synchronous: bool | None = None,
    ) -> None:
        calls.append((len(metrics), len(params), len(tags)))
        original(self, run_id, metrics=metrics, params=params, tags=tags, synchronous=synchronous)

    monkeypatch.setattr(MlflowClient, "log_batch", counting)
    rows = [MetricRow("train/loss", 1.0 / (1 + s), s, 1_000 + s) for s in range(5)]
    backend.log_batch(run, rows, params={"lr": "0.001"}, tags={"trainer.device": "cpu"})
    assert calls == [(5, 1, 1)]  # the first send: one call

    calls.clear()
    many = [MetricRow("train/loss", float(s), s, 2_000 + s) for s in range(5, 1_505)]
    params = {f"p{n:03d}": str(n) for n in range(150)}
    tags = {f"t{n:03d}": str(n) for n in range(120)}
    backend.log_batch(run, many, params=params, tags=tags)
    assert all(m + p + t <= 1_000 and p <= 100 and t <= 100 for m, p, t in calls)
    assert [sum(c[i] for c in calls) for i in range(3)] == [1_500, 150, 120]
    assert len(calls) == 2  # 800 + 100 + 100, then 700 + 50 + 20
    stored = MlflowClient(tracking_uri=backend.uri).get_run(run).data
    assert len(stored.params) == 151 and stored.tags["t119"] == "119"
    history = MlflowClient(tracking_uri=backend.uri).get_metric_history(run, "train/loss")
    assert sorted(m.step for m in history) == list(range(1_505))
