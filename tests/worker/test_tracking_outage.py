"""Fault tests of tracking at the run-lifecycle level: a real MLflow server (MLflow's own
server code on a SQLite store, `tests/worker/mlflow_server.py`) killed mid-run and brought
back; every metric is in MLflow exactly once afterwards. And a run whose MLflow never
answers still completes, and says so."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from mlflow import MlflowClient

from platform_core.event_bus import EventBus
from platform_core.events import (
    JobCompleted,
    MetricsConfig,
    MetricsConfigPayload,
    MetricsEval,
    MetricsEvalPayload,
    MetricsProgress,
    MetricsProgressPayload,
)
from platform_core.layout import DataLayout
from platform_core.manifests import RunManifest, read_run_manifest, write_manifest
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.settings import TrackingSettings
from tests.redis_server import free_port
from tests.worker.mlflow_server import StoppableMlflow
from trainer_worker.job_context import JobContext, Outcome, run_job
from trainer_worker.tracking.buffer import MetricBuffer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STEPS = 60
EVAL_EVERY = 10
PROGRESS_KEYS = ("train/loss", "train/lr", "train/tokens_per_s", "train/epoch")


def _wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _begin(context: JobContext) -> None:
    """What a model run does first: its manifest, then its config event."""
    folder = context.layout.run_dir(context.run_id)
    folder.mkdir(parents=True)
    manifest = RunManifest(
        run_id=context.run_id,
        kind="train_model",
        status=RunStatus.RUNNING,
        spec={"model": {"family": "gpt2", "preset": "tiny"}, "train": {"learning_rate": 0.01}},
        started_at=datetime.now(UTC),
    )
    write_manifest(context.layout.run_manifest(context.run_id), manifest)
    payload = MetricsConfigPayload(
        model_family="gpt2",
        num_params=1000,
        vocab_size=300,
        batch_size=8,
        max_steps=STEPS,
        learning_rate=0.01,
        device="cpu",
        precision="fp32",
        seed=7,
    )
    context.publish(MetricsConfig(run_id=context.run_id, payload=payload))


def _step(context: JobContext, step: int) -> None:
    progress = MetricsProgressPayload(
        step=step, epoch=step / STEPS, loss=6.0 - step / 20, lr=0.01, tokens_per_s=500.0
    )
    context.publish(MetricsProgress(run_id=context.run_id, payload=progress))
    if step % EVAL_EVERY == 0:
        evaluation = MetricsEvalPayload(step=step, eval_loss=5.0, perplexity=148.4)
        context.publish(MetricsEval(run_id=context.run_id, payload=evaluation))


def test_mlflow_down_mid_run_every_metric_lands_exactly_once(
    redis_client: redis.Redis, data_root: Path, tmp_path: Path
) -> None:
    layout = DataLayout(data_root)
    run_id = "run-outage"
    buffered_while_down: list[int] = []
    with StoppableMlflow(tmp_path / "mlflow") as server:
        settings = TrackingSettings(uri=server.url, final_wait_s=120, request_timeout_s=2)

        def body(context: JobContext) -> Outcome:
            _begin(context)
            for step in range(1, STEPS + 1):
                _step(context, step)
                if step == 20:  # MLflow has the run and its first metrics: take it down
                    _wait_for(lambda: layout.tracking_record(run_id).is_file())
                    server.stop()
                if step == 40:  # rows went to the buffer meanwhile; bring MLflow back
                    _wait_for(lambda: len(MetricBuffer(layout.tracking_buffer(run_id)).load()) > 40)
                    buffered_while_down.append(
                        len(MetricBuffer(layout.tracking_buffer(run_id)).load())
                    )
                    server.start()
                time.sleep(0.02)  # a step's work
            return Outcome(result={"steps": STEPS}, message=f"trained {STEPS} steps")

        result = run_job(
            "train_model",
            run_id,
            body,
            bus=EventBus(redis_client),
            layout=layout,
            tracking=settings,
        )
        assert result["status"] == "completed"
        assert buffered_while_down and buffered_while_down[0] > 40

        manifest = read_run_manifest(layout.run_manifest(run_id))
        assert manifest.tracking is not None and manifest.tracking.synced is True
        assert manifest.tracking.pending_metrics == 0
        mlflow_run_id = manifest.tracking.mlflow_run_id
        assert mlflow_run_id is not None
        assert manifest.tracking.ui_url == (
            f"{server.url}/#/experiments/{manifest.tracking.experiment_id}/runs/{mlflow_run_id}"
        )

        client = MlflowClient(tracking_uri=server.url)
        for key in PROGRESS_KEYS:
            steps = Counter(int(m.step) for m in client.get_metric_history(mlflow_run_id, key))
            assert steps == Counter(range(1, STEPS + 1)), key  # every step, exactly once
        for key in ("val/loss", "val/perplexity"):
            steps = Counter(int(m.step) for m in client.get_metric_history(mlflow_run_id, key))
            assert steps == Counter(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY)), key
        run = client.get_run(mlflow_run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["train.learning_rate"] == "0.01"
        assert run.data.tags["trainer.run_id"] == run_id
        assert run.data.tags["trainer.model_family"] == "gpt2"
        assert "manifest.json" in {a.path for a in client.list_artifacts(mlflow_run_id)}
        assert MetricBuffer(layout.tracking_buffer(run_id)).load() == []


def test_a_run_completes_when_mlflow_never_answers_and_says_so(
    redis_client: redis.Redis, data_root: Path
) -> None:
    layout = DataLayout(data_root)
    closed = f"http://127.0.0.1:{free_port()}"
    settings = TrackingSettings(uri=closed, final_wait_s=1, request_timeout_s=1)

    def body(context: JobContext) -> Outcome:
        _begin(context)
        for step in range(1, 11):
            _step(context, step)
        return Outcome(result={}, message="trained 10 steps")

    result = run_job(
        "train_model",
        "run-dark",
        body,
        bus=EventBus(redis_client),
        layout=layout,
        tracking=settings,
    )
    assert result["status"] == "completed"
    store = RunStateStore(redis_client)
    assert store.status("run-dark") is RunStatus.COMPLETED
    note = "MLflow did not answer: 42 metrics kept in runs/run-dark/tracking/buffer.jsonl"
    assert store.message("run-dark") == f"trained 10 steps; {note}"
    completed = [
        d.event
        for d in EventBus(redis_client).read(count=1000)
        if isinstance(d.event, JobCompleted)
    ]
    assert "MLflow did not answer" in completed[-1].payload.message
    manifest = read_run_manifest(layout.run_manifest("run-dark"))
    assert manifest.tracking is not None
    assert manifest.tracking.synced is False and manifest.tracking.pending_metrics == 42
    assert len(MetricBuffer(layout.tracking_buffer("run-dark")).load()) == 42
