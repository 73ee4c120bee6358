"""generate / score / evaluate jobs through RQ and the Redis result cache, on a real (tiny)
trained run."""

from __future__ import annotations

import json
from pathlib import Path
from pydoc_data.topics import topics

import pytest
import redis
from rq import Queue, SimpleWorker

from platform_core import inference_results
from platform_core.errors import AppError, ErrorCode
from platform_core.inference_results import (
    InferenceKind,
    InferenceRecord,
    enqueue_inference,
    load_record,
    result_key,
)
from platform_core.json_types import JsonObject
from platform_core.queue import INFERENCE_QUEUE, TRAINING_QUEUE, enqueue_job
from platform_core.run_state import RunStateStore, RunStatus
from tests.manifests import write_run_manifest
from trainer_worker import defaults
from trainer_worker.inference_jobs import generate_work, run_inference

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def trained_run(redis_client: redis.Redis, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)
    text = "\n\n".join(topics[key] for key in sorted(topics))[:40_000]
    (data_root / "corpus.txt").write_text(text, encoding="utf-8")
    corpus: JsonObject = {"path": "corpus.txt"}
    enqueue_job(redis_client, "train_tokenizer", "tok", {"kind": "char", "corpus": corpus})
    train: JsonObject = {
        "max_steps": 20,
        "batch_size": 8,
        "block_size": 32,
        "eval_every": 10,
        "eval_batches": 2,
        "warmup_steps": 2,
        "learning_rate": 1e-2,
        "min_lr": 1e-3,
        "device": "cpu",
    }
    spec: JsonObject = {
        "model": {"family": "char_lstm", "preset": "tiny"},
        "tokenizer_id": "tok",
        "corpus": corpus,
        "train": train,
        "sample_max_new_tokens": 4,
    }
    enqueue_job(redis_client, "train_model", "run-1", spec)
    _work(redis_client, TRAINING_QUEUE)
    assert RunStateStore(redis_client).status("run-1") is RunStatus.COMPLETED
    return "run-1"


def _work(client: redis.Redis, queue: str = INFERENCE_QUEUE) -> None:
    SimpleWorker([Queue(queue, connection=client)], connection=client).work(burst=True)


def _ask(
    client: redis.Redis,
    kind: InferenceKind,
    request_id: str,
    request: JsonObject,
    run_id: str = "run-1",
) -> InferenceRecord:
    queued = enqueue_inference(client, kind, run_id, request_id, request)
    assert queued.status == "queued"
    _work(client)
    record = load_record(client, kind, request_id)
    assert record is not None
    return record


def test_generate_is_cached_by_request_id_and_greedy_is_deterministic(
    redis_client: redis.Redis, trained_run: str
) -> None:
    request: JsonObject = {"prompt": "The ", "max_new_tokens": 16, "temperature": 0}
    first = _ask(redis_client, "generate", "g1", request)
    second = _ask(redis_client, "generate", "g2", request)
    assert first.status == "completed" and first.result is not None and second.result is not None
    assert first.result["outputs"] == second.result["outputs"]
    assert first.finished_at is not None
    assert redis_client.ttl(result_key("generate", "g1")) > 3600
    # re-sending a request id answers from the cache instead of running again
    again = enqueue_inference(redis_client, "generate", trained_run, "g1", {"prompt": "other"})
    assert again == first
    assert Queue(INFERENCE_QUEUE, connection=redis_client).count == 0


def test_score_and_evaluate(redis_client: redis.Redis, trained_run: str, data_root: Path) -> None:
    scored = _ask(
        redis_client, "score", "s1", {"text": "The function returns a value.", "top_k": 2}
    )
    assert scored.status == "completed" and scored.result is not None
    assert scored.result["num_tokens"] == len("The function returns a value.")
    assert isinstance(scored.result["loss"], float) and scored.result["loss"] > 0
    evaluated = _ask(redis_client, "evaluate", "e1", {})
    assert evaluated.status == "completed" and evaluated.result is not None
    metrics = json.loads((data_root / "runs" / trained_run / "eval" / "metrics.json").read_text())
    # the full holdout, every token once, lands near the loop's sampled estimate
    assert abs(float(str(evaluated.result["eval_loss"])) - metrics["best_eval_loss"]) < 0.5
    lines = (
        (data_root / "runs" / trained_run / "eval" / "evaluations.jsonl").read_text().splitlines()
    )
    assert json.loads(lines[0])["tokens"] == evaluated.result["tokens"]


@pytest.mark.parametrize(
    ("kind", "payload", "code"),
    [
        ("generate", {"prompt": "x", "max_new_tokens": 1000}, ErrorCode.INVALID_INPUT),
        ("generate", {"prompt": "x", "temperature": -1}, ErrorCode.INVALID_INPUT),
        ("score", {"text": ""}, ErrorCode.INVALID_INPUT),
        ("evaluate", {"split": "test"}, ErrorCode.INVALID_INPUT),
    ],
)
def test_bad_requests_fail_with_a_typed_error(
    redis_client: redis.Redis,
    trained_run: str,
    kind: InferenceKind,
    payload: JsonObject,
    code: ErrorCode,
) -> None:
    record = _ask(redis_client, kind, "bad", payload)
    assert record.status == "failed" and record.error is not None
    assert record.error.code is code


def test_unknown_run_and_bad_ids(
    redis_client: redis.Redis, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    record = _ask(redis_client, "generate", "q1", {"prompt": "x"}, run_id="ghost")
    assert record.error is not None and record.error.code is ErrorCode.NOT_FOUND
    with pytest.raises(AppError) as info:
        enqueue_inference(redis_client, "generate", "../etc", "q2", {})
    assert info.value.code is ErrorCode.INVALID_INPUT


def test_a_run_without_weights_yet_is_a_conflict(
    redis_client: redis.Redis, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    spec: JsonObject = {"model": {"family": "char_lstm"}, "tokenizer_id": "tok"}
    write_run_manifest(data_root / "runs" / "young", spec)
    record = _ask(redis_client, "score", "y1", {"text": "ab"}, run_id="young")
    assert record.error is not None and record.error.code is ErrorCode.CONFLICT


@pytest.mark.parametrize("manifest", ['{"status": "failed"}', "{not json", '{"spec": 3}'])
def test_a_run_without_a_usable_manifest_is_a_typed_failure(
    redis_client: redis.Redis, data_root: Path, monkeypatch: pytest.MonkeyPatch, manifest: str
) -> None:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    folder = data_root / "runs" / "broken"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(manifest)
    record = _ask(redis_client, "generate", "b1", {"prompt": "x"}, run_id="broken")
    assert record.status == "failed"
    assert record.error is not None and record.error.code is ErrorCode.MODEL_NOT_FOUND


def test_an_unexpected_error_still_ends_the_request(
    redis_client: redis.Redis, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the work must not leave the request "running" for its caller to wait on."""
    enqueue_inference(redis_client, "generate", "run-x", "boom", {"prompt": "x"})

    def broken(*_args: object) -> JsonObject:
        raise RuntimeError("a bug")

    monkeypatch.setattr("trainer_worker.inference_jobs._load_run", broken)
    with pytest.raises(RuntimeError):
        run_inference(
            "generate", "boom", {}, generate_work, client=redis_client, data_root=data_root
        )
    record = load_record(redis_client, "generate", "boom")
    assert record is not None and record.status == "failed"
    assert record.error is not None and record.error.code is ErrorCode.INTERNAL
    assert "RuntimeError" in record.error.message


def test_an_expired_request_is_not_found(
    redis_client: redis.Redis, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    enqueue_inference(redis_client, "generate", "run-1", "gone", {})
    redis_client.delete(result_key("generate", "gone"))
    with pytest.raises(AppError) as info:
        run_inference(
            "generate", "gone", {}, generate_work, client=redis_client, data_root=data_root
        )
    assert info.value.code is ErrorCode.NOT_FOUND


def test_a_record_that_expires_between_set_and_get_is_enqueued_again(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    enqueue_inference(redis_client, "score", "run-1", "race", {"text": "ab"})
    # the first record expires right after SET NX refused to overwrite it
    monkeypatch.setattr(inference_results, "load_record", lambda *_args: None)
    again = enqueue_inference(redis_client, "score", "run-1", "race", {"text": "cd"})
    assert again.request == {"text": "cd"}
    assert Queue(INFERENCE_QUEUE, connection=redis_client).count == 2
