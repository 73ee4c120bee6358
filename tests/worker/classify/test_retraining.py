"""Retraining and the offline comparison through the real jobs (RQ SimpleWorker in-process,
real Redis, real tiny classifier runs on a small file dataset): a production version trained
on labels that carry no signal is replaced by one retrained on the file's corrected labels
(PROMOTE, the owner told); a retraining on the same data keeps production (KEEP, the
candidate stays in staging); a dataset prepared from the production dataset's source with
10 % more rows retrains on its own; a comparison run writes report.json and its PNG."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch
from rq import Queue, SimpleWorker

from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import Event, JobFailed, ModelPromoted, ModelRetrained
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.manifests import read_dataset_manifest
from platform_core.model_registry import ModelRegistry
from platform_core.queue import TRAINING_QUEUE, enqueue_job, requeue_stale_runs
from platform_core.retrain_specs import CompareRequest, RetrainPolicy
from platform_core.retraining import (
    growth_retrains,
    lock_key,
    put_policy,
    request_compare,
    request_retrain,
)
from platform_core.run_state import RunStateStore, RunStatus
from tests.dead_workers import died_running
from trainer_worker import defaults

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OWNER = 123456789012345678
VOCABULARY = {
    "cloud": "bucket region instance volume snapshot subnet gateway cluster replica quota",
    "kitchen": "onion garlic simmer oven skillet butter pepper basil roast dough",
    "sports": "goal referee striker keeper penalty league match coach stadium whistle",
}
DATASET: JsonObject = {"source": {"kind": "file", "path": "texts.jsonl"}, "seed": 3}


def _write_texts(data_root: Path, per_class: int, *, noisy: bool, seed: int = 0) -> None:
    """`per_class` rows of 8 words from each class's vocabulary; `noisy`: every label drawn
    at random (nothing to learn)."""
    rng = random.Random(seed)
    lines = []
    for label, words in VOCABULARY.items():
        for n in range(per_class):
            text = " ".join(rng.choice(words.split()) for _ in range(8))
            shown = rng.choice(list(VOCABULARY)) if noisy else label
            lines.append(json.dumps({"id": f"{label}-{n}", "text": text, "label": shown}))
    (data_root / "texts.jsonl").write_text("\n".join(lines) + "\n")


def _spec(dataset_id: str) -> JsonObject:
    return {
        "model": {"family": "classifier", "preset": "tiny", "dropout": 0.0},
        "classifier": {
            "dataset_id": dataset_id,
            "vocab_size": 100,
            "latency_samples": 5,
            "quantize": False,
        },
        "train": {
            "max_steps": 60,
            "batch_size": 16,
            "block_size": 16,
            "learning_rate": 5e-3,
            "warmup_steps": 5,
            "eval_every": 30,
            "checkpoint_every": 30,
            "device": "cpu",
            "seed": 0,
        },
        "retention": {"keep_last_n": 1},
    }


@pytest.fixture(autouse=True)
def worker_env(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> Iterator[None]:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _work(client: redis.Redis) -> None:
    SimpleWorker([Queue(TRAINING_QUEUE, connection=client)], connection=client).work(burst=True)


def _events(client: redis.Redis) -> list[Event]:
    return [delivery.event for delivery in EventBus(client).read(count=10_000)]


def _production(client: redis.Redis, data_root: Path, *, noisy: bool) -> ModelRegistry:
    """svc 1.0.0 in production, trained on the file as it is now, dataset ds-1."""
    _write_texts(data_root, 80, noisy=noisy)
    enqueue_job(client, "prepare_dataset", "ds-1", DATASET)
    enqueue_job(client, "train_model", "run-1", _spec("ds-1"))
    _work(client)
    assert RunStateStore(client).status("run-1") is RunStatus.COMPLETED
    registry = ModelRegistry(client, DataLayout(data_root))
    registry.register("svc", None, source_run="run-1", dataset_id=None, actor="ana", reason="v1")
    registry.promote("svc", "1.0.0", "production", actor="ana", reason="first")
    return registry


def test_retraining_on_corrected_labels_promotes_and_tells_the_owner(
    redis_client: redis.Redis, data_root: Path
) -> None:
    registry = _production(redis_client, data_root, noisy=True)
    put_policy(redis_client, "svc", RetrainPolicy(owner_id=OWNER))
    _write_texts(data_root, 80, noisy=False)  # the labels were fixed in the source file
    layout = DataLayout(data_root)
    accepted = request_retrain(
        redis_client, layout, "svc", trigger="manual", bus=EventBus(redis_client)
    )
    assert accepted.dataset_run == accepted.dataset_id == f"{accepted.run_id}-data"
    with pytest.raises(AppError) as busy:  # one retraining per model at a time
        request_retrain(redis_client, layout, "svc", trigger="manual", bus=EventBus(redis_client))
    assert busy.value.code is ErrorCode.CONFLICT
    _work(redis_client)

    store = RunStateStore(redis_client)
    assert store.status(accepted.run_id) is RunStatus.COMPLETED, store.message(accepted.run_id)
    assert registry.production("svc") == "1.1.0"
    assert [(v.version, v.stage) for v in registry.versions("svc")] == [
        ("1.0.0", "archived"),
        ("1.1.0", "production"),
    ]
    assert registry.metadata("svc", "1.1.0").dataset is not None
    verdicts = [e for e in _events(redis_client) if isinstance(e, ModelRetrained)]
    assert len(verdicts) == 1
    verdict = verdicts[0]
    assert verdict.user_id == OWNER and verdict.run_id == accepted.run_id
    assert verdict.payload.decision == "PROMOTE" and verdict.payload.trigger == "manual"
    assert verdict.payload.candidate_accuracy - verdict.payload.current_accuracy >= 0.02
    assert verdict.payload.p_value < 0.05
    promoted = [e for e in _events(redis_client) if isinstance(e, ModelPromoted)]
    assert promoted[-1].payload.version == "1.1.0"
    report = json.loads((data_root / verdict.payload.report).read_text())
    assert report["decision"]["decision"] == "PROMOTE"
    assert report["current"] == "1.0.0" and report["candidate"] == "1.1.0"
    png = (data_root / verdict.payload.report).with_name("report.png")
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert redis_client.get(lock_key("svc")) is None  # the next retraining may start


def test_retraining_on_the_same_data_keeps_production_and_compare_reports(
    redis_client: redis.Redis, data_root: Path
) -> None:
    registry = _production(redis_client, data_root, noisy=False)
    layout = DataLayout(data_root)
    bus = EventBus(redis_client)
    accepted = request_retrain(
        redis_client, layout, "svc", trigger="manual", bus=bus, dataset_id="ds-1", user_id=OWNER
    )
    assert accepted.dataset_run is None
    _work(redis_client)
    assert registry.production("svc") == "1.0.0"
    assert [(v.version, v.stage) for v in registry.versions("svc")] == [
        ("1.0.0", "production"),
        ("1.1.0", "staging"),
    ]
    verdict = next(e for e in _events(redis_client) if isinstance(e, ModelRetrained))
    assert verdict.payload.decision == "KEEP" and verdict.user_id == OWNER
    assert "below the required" in verdict.payload.reason

    # the same two versions through a comparison run of their own
    run_id, spec = request_compare(
        redis_client, layout, "svc", CompareRequest(candidate="1.1.0"), bus=bus
    )
    assert (spec.current, spec.dataset_id) == ("1.0.0", "ds-1")
    _work(redis_client)
    store = RunStateStore(redis_client)
    assert store.status(run_id) is RunStatus.COMPLETED, store.message(run_id)
    folder = layout.registered_model_dir("svc") / "comparisons" / run_id
    report = json.loads((folder / "report.json").read_text())
    assert report["decision"]["decision"] == "KEEP"
    assert report["decision"]["num_examples"] == len(
        (data_root / "datasets" / "ds-1" / "test.jsonl").read_text().splitlines()
    )
    assert (folder / "report.png").read_bytes().startswith(PNG_MAGIC)


def test_a_retraining_whose_training_worker_died_resumes_and_its_verdict_follows(
    redis_client: redis.Redis, data_root: Path
) -> None:
    """The chain's training run loses its worker; the stale-run sweep requeues it
    (`<id>-train--attempt-2`): the verdict waits for that attempt, then runs."""
    _production(redis_client, data_root, noisy=False)
    bus = EventBus(redis_client)
    accepted = request_retrain(
        redis_client, DataLayout(data_root), "svc", trigger="manual", bus=bus, dataset_id="ds-1"
    )
    died_running(redis_client, accepted.train_run, attempts=1, beat_at=100.0)
    assert requeue_stale_runs(redis_client, stale_after_s=60, now=200.0) == [accepted.train_run]

    _work(redis_client)

    store = RunStateStore(redis_client)
    assert store.job_id(accepted.train_run) == f"{accepted.train_run}--attempt-2"
    assert store.status(accepted.train_run) is RunStatus.COMPLETED
    assert store.status(accepted.run_id) is RunStatus.COMPLETED, store.message(accepted.run_id)
    verdict = next(e for e in _events(redis_client) if isinstance(e, ModelRetrained))
    assert verdict.run_id == accepted.run_id and verdict.payload.candidate_version == "1.1.0"
    assert redis_client.get(lock_key("svc")) is None


def test_a_retraining_whose_training_was_given_up_on_frees_the_model_and_tells_the_owner(
    redis_client: redis.Redis, data_root: Path
) -> None:
    """Every attempt of the training run died (here its only one): the sweep ends it failed,
    and the verdict starts at once, fails with the reason (the owner's DM), and frees the
    model for the next retraining, instead of waiting for the lock's 24 h."""
    registry = _production(redis_client, data_root, noisy=False)
    put_policy(redis_client, "svc", RetrainPolicy(owner_id=OWNER))
    layout, bus = DataLayout(data_root), EventBus(redis_client)
    accepted = request_retrain(
        redis_client, layout, "svc", trigger="manual", bus=bus, dataset_id="ds-1"
    )
    died_running(redis_client, accepted.train_run, attempts=1, beat_at=100.0)
    assert requeue_stale_runs(redis_client, stale_after_s=60, now=200.0, max_attempts=1) == []

    _work(redis_client)

    store = RunStateStore(redis_client)
    assert store.status(accepted.run_id) is RunStatus.FAILED
    message = store.message(accepted.run_id) or ""
    assert f"training run {accepted.train_run} ended failed: its worker died" in message
    assert message.endswith("svc stays at 1.0.0")
    failed = [e for e in _events(redis_client) if isinstance(e, JobFailed)]
    assert [(e.run_id, e.user_id) for e in failed] == [
        (accepted.train_run, OWNER),
        (accepted.run_id, OWNER),
    ]
    assert [(v.version, v.stage) for v in registry.versions("svc")] == [("1.0.0", "production")]
    assert redis_client.get(lock_key("svc")) is None
    again = request_retrain(redis_client, layout, "svc", trigger="manual", bus=bus)
    assert again.run_id != accepted.run_id


def test_a_dataset_grown_by_ten_percent_retrains_on_its_own(
    redis_client: redis.Redis, data_root: Path
) -> None:
    registry = _production(redis_client, data_root, noisy=False)
    layout = DataLayout(data_root)
    put_policy(redis_client, "svc", RetrainPolicy(growth_threshold=0.1, owner_id=OWNER))
    base = read_dataset_manifest(layout.dataset_manifest("ds-1")).report.rows_kept
    _write_texts(data_root, 92, noisy=False)  # 15 % more rows
    enqueue_job(redis_client, "prepare_dataset", "ds-2", DATASET)
    _work(redis_client)  # the preparation, then the retraining it queued
    grown = read_dataset_manifest(layout.dataset_manifest("ds-2")).report.rows_kept
    assert grown >= 1.1 * base
    verdict = next(e for e in _events(redis_client) if isinstance(e, ModelRetrained))
    assert verdict.payload.trigger == "data_growth" and verdict.payload.dataset_id == "ds-2"
    assert verdict.user_id == OWNER
    assert [v.version for v in registry.versions("svc")] == ["1.0.0", "1.1.0"]

    # the same dataset again, or one below the threshold: nothing more is queued
    assert (
        growth_retrains(
            redis_client,
            layout,
            read_dataset_manifest(layout.dataset_manifest("ds-1")),
            bus=EventBus(redis_client),
        )
        == []
    )
    put_policy(redis_client, "svc", RetrainPolicy(growth_threshold=0.5))
    assert (
        growth_retrains(
            redis_client,
            layout,
            read_dataset_manifest(layout.dataset_manifest("ds-2")),
            bus=EventBus(redis_client),
        )
        == []
    )
