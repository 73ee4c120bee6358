"""The classifier family through the real jobs (RQ SimpleWorker in-process, real Redis): the
built-in botocore dataset is prepared, a tiny BERT is trained from scratch on it and learns
(test accuracy far above chance), its test report (metrics beside the TF-IDF baseline,
confusion PNG, latency, size, int8) reaches the manifest and the completed event, and the
run registers as a model version that `from_pretrained` loads and that predicts the labels
the run's own model predicts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch
from rq import Queue, SimpleWorker
from transformers import AutoModelForSequenceClassification

from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import Event, MetricsCheckpoint, MetricsCompleted, MetricsEval
from platform_core.json_types import JsonObject, JsonValue
from platform_core.layout import DataLayout
from platform_core.manifests import read_run_manifest
from platform_core.model_registry import ModelRegistry
from platform_core.queue import TRAINING_QUEUE, enqueue_job
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.specs import (
    MAX_PREDICT_TEXTS,
    MAX_PREDICT_TOP_LABELS,
    ClassifierPrediction,
    PredictResult,
)
from tests.worker.classify.classifier_helpers import DATASET_SPEC, classifier_spec
from trainer_worker import defaults, jobs
from trainer_worker.classify.dataset_job import read_split
from trainer_worker.classify.predict import ClassifierPredictor

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def worker_env(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> Iterator[None]:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster on a busy machine
    yield
    torch.set_num_threads(threads)


def _work(client: redis.Redis) -> None:
    SimpleWorker([Queue(TRAINING_QUEUE, connection=client)], connection=client).work(burst=True)


def _events(client: redis.Redis, run_id: str) -> list[Event]:
    return [d.event for d in EventBus(client).read(count=10_000) if d.event.run_id == run_id]


def test_a_tiny_classifier_learns_the_builtin_dataset_and_registers(
    redis_client: redis.Redis, data_root: Path
) -> None:
    store = RunStateStore(redis_client)
    enqueue_job(redis_client, "prepare_dataset", "ds-boto", DATASET_SPEC)
    # evals 100 steps apart: patience 2 then allows 200 steps, past the plateau a tiny model
    # from scratch may sit on for its first 150 (seed 0 on an AMD EPYC CPU)
    spec = classifier_spec("ds-boto", eval_every=100, checkpoint_every=100)
    enqueue_job(redis_client, "train_model", "clf-1", spec, user_id=5)
    _work(redis_client)
    assert store.status("clf-1") is RunStatus.COMPLETED, store.message("clf-1")

    layout = DataLayout(data_root)
    manifest = read_run_manifest(layout.run_manifest("clf-1"))
    record = manifest.classifier
    assert record is not None and record.dataset_id == "ds-boto"
    labels = record.labels
    assert len(labels) == 15
    chance = 1 / len(labels)
    assert record.test.accuracy > 3 * chance, record.test.accuracy  # learns, far above chance
    assert record.test.macro_f1 > 2 * chance
    assert set(record.test.per_class) == set(labels)
    assert record.baseline_test is not None and record.baseline_test.accuracy > 0.3
    assert sum(map(sum, record.confusion)) == record.test.num_examples
    diagonal = sum(record.confusion[i][i] for i in range(len(labels)))
    assert diagonal / record.test.num_examples == pytest.approx(record.test.accuracy)
    assert 0 < record.latency.p50_ms <= record.latency.p95_ms < 100
    weights = (layout.model_dir("clf-1") / "model.safetensors").stat().st_size
    assert 0 < weights - record.size_bytes < 64_000  # the file: parameters, buffers, header
    quantized = record.quantized
    assert quantized is not None
    assert quantized.accuracy_delta == pytest.approx(quantized.test.accuracy - record.test.accuracy)
    assert abs(quantized.accuracy_delta) < 0.1  # int8 Linear layers keep what was learned
    assert 0 < quantized.size_bytes < weights * 1.5

    # the best validation accuracy picked the weights; early stopping had patience 2
    train = manifest.spec["train"]
    assert isinstance(train, dict) and train["early_stopping_patience"] == 2
    events = _events(redis_client, "clf-1")
    evals = [e for e in events if isinstance(e, MetricsEval)]
    accuracies = [e.payload.metrics["val/accuracy"] for e in evals]
    assert record.best_val_accuracy == max(accuracies)
    assert record.best_step == evals[accuracies.index(max(accuracies))].payload.step
    # checkpoints carry the selection score (1 - validation accuracy) that retention ranks by
    accuracy_at = {e.payload.step: e.payload.metrics["val/accuracy"] for e in evals}
    saved = [e.payload for e in events if isinstance(e, MetricsCheckpoint)]
    assert [c.step for c in saved] == [100, 200, 300][: len(saved)]
    for checkpoint in saved:
        assert checkpoint.metric == pytest.approx(1 - accuracy_at[checkpoint.step])
    (completed,) = [e for e in events if isinstance(e, MetricsCompleted)]
    headline = completed.payload.metrics
    assert headline["test/accuracy"] == record.test.accuracy
    assert headline["baseline/accuracy"] == record.baseline_test.accuracy
    assert headline["int8/p95_ms"] == quantized.latency.p95_ms
    assert "TF-IDF baseline" in (store.message("clf-1") or "")

    eval_dir = layout.eval_dir("clf-1")
    assert (eval_dir / "confusion.png").read_bytes().startswith(PNG_MAGIC)
    assert json.loads((eval_dir / "classifier.json").read_text())["labels"] == labels

    # the run's model predicts in batches, labels with probabilities, bounded
    test_rows = read_split(layout.dataset_split("ds-boto", "test"))[:20]
    texts = [row.text for row in test_rows]
    predictor = ClassifierPredictor(layout.model_dir("clf-1"))
    assert predictor.max_length == 64  # the run's block size, saved with its tokenizer
    answers = predictor.predict(texts)
    assert all(len(a.top) == MAX_PREDICT_TOP_LABELS and a.top[0].label == a.label for a in answers)
    assert all(
        a.top[0].probability >= a.top[1].probability >= a.top[2].probability for a in answers
    )
    with pytest.raises(AppError) as refused:
        predictor.predict(["x"] * (MAX_PREDICT_TEXTS + 1))
    assert refused.value.code is ErrorCode.INVALID_INPUT
    # the shared predict job's work answers for a classifier run in the family's shape
    request: JsonObject = {"texts": list[JsonValue](texts)}
    answered = jobs.predict_run_work(data_root, "clf-1", request)
    result = PredictResult.model_validate(answered)
    assert [p.family for p in result.predictions] == ["classifier"] * len(texts)
    assert [p.label for p in result.predictions if isinstance(p, ClassifierPrediction)] == [
        a.label for a in answers
    ]
    with pytest.raises(AppError) as too_many:
        jobs.predict_run_work(data_root, "clf-1", {"texts": ["x"] * (MAX_PREDICT_TEXTS + 1)})
    assert too_many.value.code is ErrorCode.INVALID_INPUT

    # registered: the version loads with from_pretrained and predicts the same labels
    registry = ModelRegistry(redis_client, layout)
    metadata = registry.register(
        "aws-docs", None, source_run="clf-1", dataset_id=None, actor="ana", reason="first"
    )
    assert metadata.dataset is not None and metadata.dataset.id == "ds-boto"
    assert metadata.hyperparameters["classifier"] == manifest.spec["classifier"]
    classifier_metrics = metadata.metrics["classifier"]
    assert isinstance(classifier_metrics, dict)
    assert classifier_metrics["test"] == json.loads(record.test.model_dump_json())
    assert {"tokenizer.json", "config.json", "model.safetensors"} <= set(metadata.files)
    folder = layout.model_version_dir("aws-docs", metadata.version)
    loaded = AutoModelForSequenceClassification.from_pretrained(folder)
    assert loaded.config.id2label == dict(enumerate(labels))
    registered = ClassifierPredictor(folder)
    assert [a.label for a in registered.predict(texts)] == [a.label for a in answers]
