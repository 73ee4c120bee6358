"""The encoder families (classifier, dual-agent) from a pretrained encoder, through the real
jobs (real Redis): a small BERT saved with its own tokenizer in a `data:` folder is loaded
with a fresh head, trained, and its run uses the folder's tokenizer (not a WordPiece of its
own); the finished run predicts; a worker killed mid-run resumes from its checkpoint to the
evals of the same run never interrupted."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
import torch
from rq import Queue, SimpleWorker
from safetensors.torch import load_file
from transformers import AutoConfig

from platform_core.event_bus import EventBus
from platform_core.events import MetricsEval, MetricsEvalPayload
from platform_core.json_types import JsonObject, JsonValue
from platform_core.layout import DataLayout
from platform_core.manifests import RunManifest, read_run_manifest
from platform_core.queue import TRAINING_QUEUE, enqueue_job, requeue_stale_runs
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.specs import ClassifierPrediction, DualAgentPrediction, PredictResult
from tests.worker.classify.classifier_helpers import classifier_spec
from tests.worker.dual_agent_helpers import dual_agent_spec
from tests.worker.pretrained_encoder_helpers import (
    FOLDER,
    PRETRAINED,
    save_small_bert,
    with_pretrained,
)
from tests.worker.test_resume import _kill_with_children, _newest_step, _worker
from trainer_worker import defaults, jobs
from trainer_worker.checkpoints.store import MODEL_FILE, checkpoint_name
from trainer_worker.classify.dataset_job import read_split
from trainer_worker.dual_agent.criteria import CRITERIA
from trainer_worker.dual_agent.tokenizer import load_fast_tokenizer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# the built-in botocore dataset, 30 rows per service (450 rows, 15 classes)
SMALL_DATASET: JsonObject = {"source": {"kind": "builtin", "max_per_class": 30}, "seed": 5}
# the dual-agent encoder's "pretraining" texts: a vocabulary of its own, not the posts'
POSTS = [
    "i could not sleep last night and felt sad, tired and hopeless about everything",
    "we cooked dinner, watched a film and my roommate fell asleep on the couch",
]


@pytest.fixture(autouse=True)
def worker_env(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> None:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)


def _work(client: redis.Redis) -> None:
    SimpleWorker([Queue(TRAINING_QUEUE, connection=client)], connection=client).work(burst=True)


def _classifier(dataset_id: str, **train: int | float | str | None) -> JsonObject:
    return with_pretrained(classifier_spec(dataset_id, **train))


def _dual_agent(**train: int | float | str | None) -> JsonObject:
    spec = with_pretrained(dual_agent_spec(**train))
    return {**spec, "dual_agent": {"generated_posts": 200, "split_seed": 7, "vocab_size": 1000}}


def _run_to_completion(client: redis.Redis, data_root: Path, run_id: str) -> RunManifest:
    """Work the queue; the run completed from the pretrained folder: its manifest."""
    _work(client)
    store = RunStateStore(client)
    assert store.status(run_id) is RunStatus.COMPLETED, store.message(run_id)
    manifest = read_run_manifest(DataLayout(data_root).run_manifest(run_id))
    model = manifest.spec["model"]
    assert isinstance(model, dict) and model["pretrained"] == PRETRAINED
    return manifest


def _evals(client: redis.Redis, run_id: str) -> list[MetricsEvalPayload]:
    events = [d.event for d in EventBus(client).read(count=10_000) if d.event.run_id == run_id]
    return [e.payload for e in events if isinstance(e, MetricsEval)]


def _train_texts(data_root: Path) -> list[str]:
    return [row.text for row in read_split(DataLayout(data_root).dataset_split("ds", "train"))]


def _predict(data_root: Path, run_id: str, texts: list[str]) -> PredictResult:
    request: JsonObject = {"texts": list[JsonValue](texts)}
    return PredictResult.model_validate(jobs.predict_run_work(data_root, run_id, request))


def test_a_classifier_fine_tunes_a_pretrained_encoder_with_its_tokenizer_and_predicts(
    redis_client: redis.Redis, data_root: Path
) -> None:
    enqueue_job(redis_client, "prepare_dataset", "ds", SMALL_DATASET)
    _work(redis_client)
    pretrained_tokenizer = save_small_bert(data_root, _train_texts(data_root))
    enqueue_job(redis_client, "train_model", "clf", _classifier("ds", max_steps=150, eval_every=50))
    manifest = _run_to_completion(redis_client, data_root, "clf")
    layout = DataLayout(data_root)
    record = manifest.classifier
    assert record is not None
    labels = record.labels
    evals = _evals(redis_client, "clf")
    assert min(e.eval_loss for e in evals[1:]) < evals[0].eval_loss  # fine-tuning learns
    # the folder's tokenizer, not a WordPiece of classifier.vocab_size (2000) over the data
    saved = load_fast_tokenizer(layout.model_dir("clf"))
    assert saved.get_vocab() == pretrained_tokenizer.get_vocab()
    config = AutoConfig.from_pretrained(layout.model_dir("clf"))
    assert config.vocab_size == len(pretrained_tokenizer) and config.hidden_size == 32
    assert config.id2label == dict(enumerate(labels))  # a fresh head over the dataset's labels

    texts = [row.text for row in read_split(layout.dataset_split("ds", "test"))[:8]]
    answers = _predict(data_root, "clf", texts).predictions
    assert len(answers) == len(texts)
    assert all(isinstance(a, ClassifierPrediction) and a.label in labels for a in answers)


def test_a_dual_agent_run_trains_a_pretrained_encoder_with_its_tokenizer_and_predicts(
    redis_client: redis.Redis, data_root: Path
) -> None:
    pretrained_tokenizer = save_small_bert(data_root, POSTS)
    enqueue_job(redis_client, "train_model", "dual", _dual_agent(max_steps=60, eval_every=30))
    manifest = _run_to_completion(redis_client, data_root, "dual")
    layout = DataLayout(data_root)
    assert manifest.dual_agent is not None
    evals = _evals(redis_client, "dual")
    assert [e.step for e in evals] == [0, 30, 60]
    assert evals[-1].eval_loss < evals[0].eval_loss
    model_dir = layout.model_dir("dual")
    saved = load_fast_tokenizer(model_dir / "tokenizer")
    assert saved.get_vocab() == pretrained_tokenizer.get_vocab()  # not the run's own WordPiece
    encoder = AutoConfig.from_pretrained(model_dir / "encoder")
    assert encoder.vocab_size == len(pretrained_tokenizer) and encoder.hidden_size == 32

    texts = ["I have felt empty and hopeless for weeks.", "We went hiking on Sunday."]
    answers = _predict(data_root, "dual", texts).predictions
    assert len(answers) == len(texts)
    for answer in answers:
        assert isinstance(answer, DualAgentPrediction)
        assert [c.criterion for c in answer.criteria] == list(CRITERIA)
        assert all(0.0 <= c.probability <= 1.0 for c in answer.criteria)


def _resumable_spec(family: str, redis_client: redis.Redis) -> tuple[JsonObject, int, int]:
    """The spec, its steps and its checkpoint interval (no early stopping: the run must
    still be going when it is killed)."""
    if family == "dual_agent":
        return _dual_agent(max_steps=80, eval_every=40, checkpoint_every=40), 80, 40
    enqueue_job(redis_client, "prepare_dataset", "ds", SMALL_DATASET)
    _work(redis_client)
    spec = _classifier(
        "ds", max_steps=100, eval_every=50, checkpoint_every=50, early_stopping_patience=None
    )
    options = spec["classifier"]
    assert isinstance(options, dict)
    # the test report's int8 copy is the classifier run test's business: a shorter test here
    return {**spec, "classifier": {**options, "quantize": False}}, 100, 50


@pytest.mark.parametrize("family", ["classifier", "dual_agent"])
def test_a_killed_pretrained_run_resumes_to_the_uninterrupted_evals(
    family: str, redis_client: redis.Redis, redis_url: str, data_root: Path
) -> None:
    spec, max_steps, every = _resumable_spec(family, redis_client)
    save_small_bert(data_root, POSTS if family == "dual_agent" else _train_texts(data_root))
    store = RunStateStore(redis_client)
    enqueue_job(redis_client, "train_model", "ref", spec)
    _work(redis_client)  # in this process: one worker start less on a busy machine
    assert store.status("ref") is RunStatus.COMPLETED, store.message("ref")

    enqueue_job(redis_client, "train_model", "victim", spec)
    worker = _worker(data_root, redis_url, burst=False)
    folder = data_root / "runs" / "victim"
    deadline = time.monotonic() + 240
    while _newest_step(folder) < every and time.monotonic() < deadline:
        time.sleep(0.005)
    _kill_with_children(worker.pid)
    worker.wait(10)
    killed_at = _newest_step(folder)
    assert every <= killed_at < max_steps, "the worker must die mid-run"

    time.sleep(1.2)  # the heartbeat has stopped: the run is stale
    assert requeue_stale_runs(redis_client, stale_after_s=1.0) == ["victim"]
    assert _worker(data_root, redis_url, burst=True).wait(240) == 0
    assert store.status("victim") is RunStatus.COMPLETED, store.message("victim")
    manifest = read_run_manifest(folder / "manifest.json")
    assert manifest.resumed_from_step == killed_at and manifest.attempt == 2
    # each eval once; those after the resume point, computed by the second attempt, equal
    # the uninterrupted run's (final weights may differ by design: a classifier keeps the
    # best eval of its own attempt)
    reference = {e.step: e for e in _evals(redis_client, "ref")}
    resumed = _evals(redis_client, "victim")
    assert [e.step for e in resumed] == sorted(reference)
    for got in (e for e in resumed if e.step > killed_at):
        expected = reference[got.step]
        assert got.eval_loss == pytest.approx(expected.eval_loss, abs=1e-5), got.step
        for name, value in expected.metrics.items():
            assert got.metrics[name] == pytest.approx(value, abs=1e-5), (got.step, name)


def _frozen_spec(freeze_layers: int) -> JsonObject:
    spec = _classifier("ds", max_steps=40, eval_every=20, early_stopping_patience=None)
    options = spec["classifier"]
    assert isinstance(options, dict)
    return {**spec, "classifier": {**options, "freeze_layers": freeze_layers, "quantize": False}}


def test_a_classifier_keeps_the_frozen_lower_blocks_and_trains_the_rest(
    redis_client: redis.Redis, data_root: Path
) -> None:
    enqueue_job(redis_client, "prepare_dataset", "ds", SMALL_DATASET)
    _work(redis_client)
    save_small_bert(data_root, _train_texts(data_root))  # 2 blocks
    enqueue_job(redis_client, "train_model", "frozen", _frozen_spec(1))
    _run_to_completion(redis_client, data_root, "frozen")
    assert [e.step for e in _evals(redis_client, "frozen")] == [0, 20, 40]  # real steps

    # the last step's weights (the model/ folder holds the best eval's, maybe step 0's)
    last = DataLayout(data_root).run_dir("frozen") / "checkpoints" / checkpoint_name(40)
    trained = load_file(last / MODEL_FILE)
    pretrained = load_file(data_root / FOLDER / MODEL_FILE)
    for name, before in pretrained.items():
        after = trained[f"bert.{name}"]
        if name.startswith(("embeddings.", "encoder.layer.0.")):
            assert torch.equal(after, before), name
        elif name.startswith("encoder.layer.1.") and name.endswith(".weight"):
            assert not torch.equal(after, before), name


def test_freezing_more_blocks_than_the_model_has_fails_before_the_run_folder(
    redis_client: redis.Redis, data_root: Path
) -> None:
    enqueue_job(redis_client, "prepare_dataset", "ds", SMALL_DATASET)
    _work(redis_client)
    save_small_bert(data_root, _train_texts(data_root))
    enqueue_job(redis_client, "train_model", "too-deep", _frozen_spec(3))
    _work(redis_client)
    store = RunStateStore(redis_client)
    assert store.status("too-deep") is RunStatus.FAILED
    assert "freeze_layers (3) exceeds the model's 2 encoder blocks" in (
        store.message("too-deep") or ""
    )
    assert not DataLayout(data_root).run_dir("too-deep").exists()
