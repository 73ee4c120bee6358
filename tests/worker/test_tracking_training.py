"""A real tiny GPT-2 run tracked to the default store (SQLite under the data root, nothing
to start): params, tags, metrics with the seeds' names, artifacts; an attempt that fails
mid-training and is retried resumes from its checkpoint and continues the same MLflow run,
with every metric in it exactly once."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import redis
from mlflow import MlflowClient

from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import MetricsCheckpoint, MetricsProgress
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.manifests import read_run_manifest, read_tracking_record
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.settings import TrackingSettings
from platform_core.specs import TokenizerSpec
from trainer_worker.job_context import RetryLater, run_job
from trainer_worker.model_run import train_model_body
from trainer_worker.run_callbacks import RunCallbacks
from trainer_worker.tokenizers.artifacts import train_tokenizer_artifact
from trainer_worker.tracking.backend import store_uri
from trainer_worker.training.callbacks import EvalInfo

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RUN = "run-tracked"
MAX_STEPS = 30


def _spec() -> JsonObject:
    train: JsonObject = {
        "max_steps": MAX_STEPS,
        "batch_size": 4,
        "block_size": 32,
        "learning_rate": 1e-2,
        "min_lr": 1e-3,
        "warmup_steps": 5,
        "eval_every": 10,
        "eval_batches": 2,
        "progress_every_steps": 5,
        "checkpoint_every": 10,
        "device": "cpu",
        "seed": 3,
    }
    return {
        "model": {"family": "gpt2", "preset": "tiny"},
        "tokenizer_id": "tok",
        "train": train,
        "sample_max_new_tokens": 4,
    }


def _train(client: redis.Redis, layout: DataLayout, settings: TrackingSettings) -> JsonObject:
    spec = _spec()
    return run_job(
        "train_model",
        RUN,
        lambda context: train_model_body(spec, context),
        bus=EventBus(client),
        layout=layout,
        can_retry=True,
        tracking=settings,
    )


def test_a_real_run_is_tracked_and_its_retry_continues_the_same_mlflow_run(
    redis_client: redis.Redis, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = DataLayout(data_root)
    train_tokenizer_artifact("tok", TokenizerSpec(kind="char"), layout.root)
    settings = TrackingSettings(final_wait_s=60)  # no URI: the default SQLite store
    RunStateStore(redis_client).set_status(RUN, RunStatus.QUEUED)

    # the first attempt dies at its step-20 eval (after the step-10 checkpoint), transiently
    real_on_eval = RunCallbacks.on_eval
    failed: list[int] = []

    def on_eval_failing_once(self: RunCallbacks, info: EvalInfo) -> None:
        if info.step == 20 and not failed:
            failed.append(info.step)
            raise AppError(ErrorCode.UPSTREAM_UNAVAILABLE, "a blip")
        real_on_eval(self, info)

    monkeypatch.setattr(RunCallbacks, "on_eval", on_eval_failing_once)
    with pytest.raises(RetryLater):
        _train(redis_client, layout, settings)
    first = read_tracking_record(layout.tracking_record(RUN))
    assert first.mlflow_run_id is not None
    client = MlflowClient(tracking_uri=store_uri(settings, layout))
    assert client.get_run(first.mlflow_run_id).info.status == "RUNNING"  # to be continued

    result = _train(redis_client, layout, settings)
    assert result["status"] == "completed", result
    manifest = read_run_manifest(layout.run_manifest(RUN))
    assert manifest.resumed_from_step == 10
    assert manifest.tracking is not None and manifest.tracking.synced is True
    assert manifest.tracking.mlflow_run_id == first.mlflow_run_id  # the same MLflow run
    assert (data_root / "mlflow" / "mlflow.db").is_file()

    run = client.get_run(first.mlflow_run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.family"] == "gpt2" and params["train.max_steps"] == str(MAX_STEPS)
    assert params["train.learning_rate"] == "0.01" and int(params["num_params"]) > 0
    tags = run.data.tags
    assert tags["trainer.run_id"] == RUN and tags["trainer.kind"] == "train_model"
    assert tags["trainer.attempt"] == "2" and tags["trainer.host"]
    assert len(tags["trainer.git_commit"]) == 40  # this checkout's HEAD

    # every progress report and eval of both attempts, each (key, step) exactly once
    events = [d.event for d in EventBus(redis_client).read(count=10_000)]
    progress_steps = sorted(e.payload.step for e in events if isinstance(e, MetricsProgress))
    assert progress_steps == list(range(5, MAX_STEPS + 1, 5))
    for key in ("train/loss", "train/lr", "train/tokens_per_s", "train/epoch"):
        history = Counter(int(m.step) for m in client.get_metric_history(run.info.run_id, key))
        assert sorted(history) == progress_steps and set(history.values()) == {1}, key
    for key in ("val/loss", "val/perplexity"):
        history = Counter(int(m.step) for m in client.get_metric_history(run.info.run_id, key))
        assert set(history) >= {10, 20, 30} and set(history.values()) == {1}, key
    for key in ("system/checkpoint_size_mb", "system/disk_free_gb"):
        assert client.get_metric_history(run.info.run_id, key), key

    # artifacts: the manifest, the eval report, the best checkpoint's reference
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"manifest.json", "metrics.json", "best_checkpoint.json"} <= artifacts
    local = Path(client.download_artifacts(run.info.run_id, "best_checkpoint.json"))
    reference = json.loads(local.read_text(encoding="utf-8"))
    announced = {e.payload.sha256 for e in events if isinstance(e, MetricsCheckpoint)}
    assert reference["sha256"] in announced
    assert (data_root / reference["path"]).is_dir()
