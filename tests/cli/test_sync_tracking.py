"""`trainctl sync-tracking RUN_ID`: a run that ended while MLflow was down gets its buffered
metrics into MLflow afterwards, each once; exit codes for a run still at work, a missing run
and an MLflow that still does not answer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlflow import MlflowClient

from platform_core.errors import ExitCode
from platform_core.events import MetricsProgress, MetricsProgressPayload
from platform_core.layout import DataLayout
from platform_core.manifests import RunManifest, read_run_manifest, write_manifest
from platform_core.run_state import RunStatus
from platform_core.settings import TrackingSettings
from tests.cli.test_remote import restored_logging
from tests.redis_server import free_port
from trainer_cli.main import main
from trainer_worker.tracking.backend import store_uri
from trainer_worker.tracking.buffer import MetricBuffer
from trainer_worker.tracking.tracker import Tracker

pytestmark = pytest.mark.integration
RUN = "run-synced-later"


@pytest.fixture
def layout(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> Iterator[DataLayout]:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.setenv("APP__TRACKING__FINAL_WAIT_S", "30")
    with restored_logging():
        yield DataLayout(data_root)


def _ended_while_mlflow_was_down(layout: DataLayout, status: RunStatus) -> None:
    """A run whose MLflow never answered: its 40 rows are in its buffer."""
    layout.run_dir(RUN).mkdir(parents=True)
    down = TrackingSettings(uri=f"http://127.0.0.1:{free_port()}", final_wait_s=1)
    tracker = Tracker(run_id=RUN, kind="train_model", attempt=1, layout=layout, settings=down)
    for step in range(1, 11):
        payload = MetricsProgressPayload(step=step, epoch=0, loss=2.0, lr=0.1, tokens_per_s=9.0)
        tracker.observe(MetricsProgress(run_id=RUN, payload=payload))
    report = tracker.finish("FINISHED")
    assert report is not None and not report.synced
    manifest = RunManifest(
        run_id=RUN,
        kind="train_model",
        status=status,
        spec={"train": {"max_steps": 10}},
        started_at=datetime.now(UTC),
        tracking=report.record,
    )
    write_manifest(layout.run_manifest(RUN), manifest)


def test_a_finished_runs_buffer_reaches_mlflow_once(
    layout: DataLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    _ended_while_mlflow_was_down(layout, RunStatus.COMPLETED)
    assert main(["sync-tracking", RUN]) == ExitCode.OK
    assert "has every metric" in capsys.readouterr().out
    tracking = read_run_manifest(layout.run_manifest(RUN)).tracking
    assert tracking is not None and tracking.synced and tracking.pending_metrics == 0
    assert tracking.mlflow_run_id is not None
    assert MetricBuffer(layout.tracking_buffer(RUN)).load() == []
    client = MlflowClient(tracking_uri=store_uri(TrackingSettings(), layout))
    history = Counter(
        int(m.step) for m in client.get_metric_history(tracking.mlflow_run_id, "train/loss")
    )
    assert history == Counter(range(1, 11))
    assert client.get_run(tracking.mlflow_run_id).info.status == "FINISHED"
    assert main(["sync-tracking", RUN]) == ExitCode.OK  # again: nothing twice
    history = Counter(
        int(m.step) for m in client.get_metric_history(tracking.mlflow_run_id, "train/loss")
    )
    assert history == Counter(range(1, 11))


def test_sync_refuses_a_running_or_unknown_run_and_says_when_mlflow_is_still_down(
    layout: DataLayout, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _ended_while_mlflow_was_down(layout, RunStatus.RUNNING)
    assert main(["sync-tracking", RUN]) == ExitCode.CONFIG  # CONFLICT: its worker tracks it
    assert "CONFLICT" in capsys.readouterr().err
    assert main(["sync-tracking", "no-such-run"]) != ExitCode.OK
    assert "DATA_NOT_FOUND" in capsys.readouterr().err

    manifest = read_run_manifest(layout.run_manifest(RUN))
    write_manifest(
        layout.run_manifest(RUN), manifest.model_copy(update={"status": RunStatus.COMPLETED})
    )
    monkeypatch.setenv("APP__TRACKING__URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("APP__TRACKING__FINAL_WAIT_S", "1")
    monkeypatch.setenv("APP__TRACKING__REQUEST_TIMEOUT_S", "1")
    assert main(["sync-tracking", RUN]) == ExitCode.TRACKING  # the seeds' exit code 5
    err = capsys.readouterr().err
    assert "TRACKING_UNAVAILABLE" in err and "MLflow did not answer: 40 metrics" in err
    assert len(MetricBuffer(layout.tracking_buffer(RUN)).load()) == 40  # kept for next time
