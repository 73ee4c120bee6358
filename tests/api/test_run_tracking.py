"""GET /runs/{id} and `trainctl status` show a run's MLflow run and its UI link, read from
what the worker wrote in the run folder (the API and the CLI never import MLflow)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import redis

from platform_core.http_client import TrainerClient
from platform_core.layout import DataLayout
from platform_core.manifests import RunManifest, TrackingRecord, write_atomic, write_manifest
from platform_core.run_state import RunStateStore, RunStatus
from tests.cli.test_remote import Cli, cli

__all__ = ["cli"]
UI = "http://mlflow.example:5000/#/experiments/1/runs/abc123"


def _finished(data_root: Path, run_id: str, record: TrackingRecord) -> None:
    layout = DataLayout(data_root)
    layout.run_dir(run_id).mkdir(parents=True)
    manifest = RunManifest(
        run_id=run_id,
        kind="train_model",
        status=RunStatus.COMPLETED,
        spec={},
        started_at=datetime.now(UTC),
        tracking=record,
    )
    write_manifest(layout.run_manifest(run_id), manifest)


def test_a_finished_run_shows_its_mlflow_run_from_the_manifest(
    client: TrainerClient, data_root: Path
) -> None:
    record = TrackingRecord(mlflow_run_id="abc123", experiment_id="1", ui_url=UI, synced=True)
    _finished(data_root, "tracked-run", record)
    run = client.get_run("tracked-run")
    assert run.tracking == record


def test_a_running_run_shows_the_mlflow_run_the_worker_opened(
    client: TrainerClient, redis_client: redis.Redis, data_root: Path
) -> None:
    layout = DataLayout(data_root)
    RunStateStore(redis_client).set_status("live-run", RunStatus.RUNNING)
    assert client.get_run("live-run").tracking is None  # tracking has not begun
    layout.tracking_dir("live-run").mkdir(parents=True)
    record = TrackingRecord(mlflow_run_id="abc123", experiment_id="1", ui_url=UI)
    write_atomic(layout.tracking_record("live-run"), record.model_dump_json().encode())
    run = client.get_run("live-run")
    assert run.tracking is not None
    assert (run.tracking.mlflow_run_id, run.tracking.ui_url, run.tracking.synced) == (
        "abc123",
        UI,
        None,
    )
    layout.tracking_record("live-run").write_text("{not json")  # never breaks the endpoint
    assert client.get_run("live-run").tracking is None


def test_trainctl_status_shows_the_mlflow_run_its_link_and_what_mlflow_lacks(
    cli: Cli, data_root: Path
) -> None:
    synced = TrackingRecord(mlflow_run_id="abc123", experiment_id="1", ui_url=UI, synced=True)
    _finished(data_root, "tracked-run", synced)
    shown = cli("status", "tracked-run")
    assert shown.code == 0
    lines = dict(line.split(maxsplit=1) for line in shown.out.splitlines())
    assert lines["mlflow"] == "abc123"
    assert lines["mlflow-ui"] == UI
    assert "tracking" not in lines

    dark = TrackingRecord(synced=False, pending_metrics=42)  # MLflow never answered
    _finished(data_root, "dark-run", dark)
    shown = cli("status", "dark-run")
    assert "mlflow     never reached" in shown.out.splitlines()
    assert "tracking   42 metrics not in MLflow (buffered)" in shown.out.splitlines()
