"""The tracker's buffer and replay against a real MLflow store (the default SQLite one under
the data root): rows survive in an append-only file until MLflow confirms them, replay after
a crash between "sent" and "buffer truncated" sends nothing twice, a later attempt continues
the same MLflow run, and an unreachable MLflow never fails the run."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
from mlflow import MlflowClient

from platform_core.events import (
    JobProgress,
    JobProgressPayload,
    JobStarted,
    JobStartedPayload,
    MetricsCheckpoint,
    MetricsCheckpointPayload,
    MetricsEval,
    MetricsEvalPayload,
    MetricsProgress,
    MetricsProgressPayload,
)
from platform_core.layout import DataLayout
from platform_core.manifests import read_tracking_record
from platform_core.settings import TrackingSettings
from tests.redis_server import free_port
from trainer_worker.tracking.backend import store_uri
from trainer_worker.tracking.buffer import MetricBuffer
from trainer_worker.tracking.event_metrics import EventMetrics, MetricRow, flatten_params
from trainer_worker.tracking.tracker import BACKOFF_S, Tracker, backoff_s

RUN = "run-replay"


def _progress(step: int, epoch: float = 0.0) -> MetricsProgress:
    payload = MetricsProgressPayload(
        step=step, epoch=epoch, loss=5.0 / step, lr=1e-3, tokens_per_s=1000.0
    )
    return MetricsProgress(run_id=RUN, payload=payload)


def _tracker(layout: DataLayout, settings: TrackingSettings, attempt: int = 1) -> Tracker:
    return Tracker(
        run_id=RUN, kind="train_model", attempt=attempt, layout=layout, settings=settings
    )


def _history(layout: DataLayout, settings: TrackingSettings, key: str) -> Counter[int]:
    record = read_tracking_record(layout.tracking_record(RUN))
    assert record.mlflow_run_id is not None
    client = MlflowClient(tracking_uri=store_uri(settings, layout))
    return Counter(int(m.step) for m in client.get_metric_history(record.mlflow_run_id, key))


def test_backoff_is_1_2_4_8_16_then_capped() -> None:
    assert [backoff_s(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 16, 16]
    assert BACKOFF_S == (1.0, 2.0, 4.0, 8.0, 16.0)


def test_buffer_appends_reads_back_skips_a_cut_line_and_clears(tmp_path: Path) -> None:
    buffer = MetricBuffer(tmp_path / "tracking" / "buffer.jsonl")
    rows = [MetricRow("train/loss", 1.5, 1, 10), MetricRow("val/loss", float("nan"), 2, 11)]
    buffer.append(rows[:1])
    buffer.append(rows[1:])
    with buffer.path.open("a", encoding="utf-8") as handle:
        handle.write('{"k": "train/loss", "v": 1.')  # a crash mid-line
    loaded = buffer.load()
    assert [(r.key, r.step) for r in loaded] == [("train/loss", 1), ("val/loss", 2)]
    assert loaded[0].value == 1.5 and loaded[1].value != loaded[1].value  # NaN kept as NaN
    buffer.clear()
    assert buffer.load() == [] and buffer.size_bytes() == 0


def test_buffer_warns_once_past_its_threshold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    buffer = MetricBuffer(tmp_path / "buffer.jsonl", warn_bytes=200)
    with caplog.at_level(logging.WARNING):
        for step in range(20):
            buffer.append([MetricRow("train/loss", 1.0, step, step)])
    warnings = [r for r in caplog.records if getattr(r, "event", "") == "tracking.buffer.large"]
    assert len(warnings) == 1


def test_event_metrics_use_the_seed_names(tmp_path: Path) -> None:
    metrics = EventMetrics(tmp_path)
    first = metrics.rows(_progress(1, epoch=0.5))
    assert {r.key for r in first} == {"train/loss", "train/lr", "train/tokens_per_s", "train/epoch"}
    crossed = metrics.rows(_progress(9, epoch=1.1))  # epoch 0 ended between the two reports
    assert "system/epoch_duration_sec" in {r.key for r in crossed}
    evaluation = MetricsEval(
        run_id=RUN,
        payload=MetricsEvalPayload(
            step=9, eval_loss=2.0, perplexity=7.4, metrics={"criteria_matcher/f1": 0.5}
        ),
    )
    assert {r.key for r in metrics.rows(evaluation)} == {
        "val/loss",
        "val/perplexity",
        "val/criteria_matcher/f1",
    }
    checkpoint = MetricsCheckpoint(
        run_id=RUN,
        payload=MetricsCheckpointPayload(
            step=9, path="runs/x", size_bytes=2_500_000, sha256="a" * 64
        ),
    )
    rows = {r.key: r.value for r in metrics.rows(checkpoint)}
    assert rows["system/checkpoint_size_mb"] == 2.5 and rows["system/disk_free_gb"] > 0


def test_params_are_the_spec_flattened() -> None:
    flat = flatten_params(
        {
            "model": {"family": "gpt2", "preset": "tiny"},
            "train": {"lr": 0.1},
            "prompts": ["a", "b"],
            "x": None,
        }
    )
    assert flat == {
        "model.family": "gpt2",
        "model.preset": "tiny",
        "train.lr": "0.1",
        "prompts": '["a", "b"]',
        "x": "null",
    }


@pytest.mark.integration
def test_replay_after_a_crash_between_sent_and_truncated_sends_nothing_twice(
    data_root: Path,
) -> None:
    layout = DataLayout(data_root)
    settings = TrackingSettings(final_wait_s=60)
    first = _tracker(layout, settings)
    for step in range(1, 21):
        first.observe(_progress(step))
    report = first.finish(None)  # a retried run: its MLflow run stays open
    assert report is not None and report.synced, report
    assert first.stats.sent == 80 and first.stats.skipped == 0
    first_id = report.record.mlflow_run_id
    assert first_id is not None
    buffer = MetricBuffer(layout.tracking_buffer(RUN))
    assert buffer.load() == []  # confirmed, so truncated

    # the crash: everything was sent, but the buffer was never truncated
    metrics = EventMetrics(layout.run_dir(RUN))
    buffer.append([row for step in range(1, 21) for row in metrics.rows(_progress(step))])
    assert len(buffer.load()) == 80

    second = _tracker(layout, settings, attempt=2)
    for step in range(21, 26):  # the run goes on after the crash
        second.observe(_progress(step))
    report = second.finish("FINISHED")
    assert report is not None and report.synced
    assert second.stats.skipped == 80  # MLflow held them: recognised by (key, step)
    assert second.stats.sent == 20  # only the five new steps' rows went out
    assert report.record.mlflow_run_id == first_id  # the same MLflow run, continued
    history = _history(layout, settings, "train/loss")
    assert sorted(history) == list(range(1, 26))
    assert set(history.values()) == {1}  # each step exactly once
    assert buffer.load() == []


@pytest.mark.integration
def test_an_unreachable_mlflow_keeps_every_row_in_the_buffer(data_root: Path) -> None:
    layout = DataLayout(data_root)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    settings = TrackingSettings(uri=closed, final_wait_s=2, request_timeout_s=1)
    tracker = _tracker(layout, settings)
    for step in range(1, 11):
        tracker.observe(_progress(step))
    report = tracker.finish("FINISHED")
    assert report is not None and not report.synced
    assert report.record.mlflow_run_id is None and report.record.pending_metrics == 40
    assert tracker.stats.failures >= 1 and tracker.stats.sent == 0
    assert len(MetricBuffer(layout.tracking_buffer(RUN)).load()) == 40
    assert report.describe("b.jsonl") == "MLflow did not answer: 40 metrics kept in b.jsonl"


@pytest.mark.integration
def test_a_run_that_publishes_no_metrics_is_not_tracked(data_root: Path) -> None:
    layout = DataLayout(data_root)
    tracker = _tracker(layout, TrackingSettings(final_wait_s=5))
    started = JobStartedPayload(kind="train_tokenizer", worker="host:1", attempt=1)
    tracker.observe(JobStarted(run_id=RUN, payload=started))
    progress = JobProgressPayload(step=1, total_steps=1, epoch=1, fraction=1.0)
    tracker.observe(JobProgress(run_id=RUN, payload=progress))
    assert tracker.finish("FINISHED") is None
    assert not layout.run_dir(RUN).exists()  # no run folder, no MLflow run
