"""train_model through RQ (SimpleWorker, in-process) against a real Redis: real training
steps of tiny models, events, artifacts, cancellation and USER_INPUT failures."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from pydoc_data.topics import topics

import pytest
import redis
from rq import Queue, SimpleWorker

from platform_core import queue
from platform_core.errors import ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import (
    Event,
    JobCancelled,
    JobFailed,
    JobStarted,
    MetricsCheckpoint,
    MetricsCompleted,
    MetricsEval,
    MetricsProgress,
)
from platform_core.inference_results import enqueue_inference, load_record
from platform_core.json_types import JsonObject
from platform_core.logging import configure_logging
from platform_core.queue import INFERENCE_QUEUE, TRAINING_QUEUE, enqueue_job, request_cancel
from platform_core.run_state import RunStateStore, RunStatus
from trainer_worker import defaults, run_callbacks
from trainer_worker.checkpoints import list_checkpoints, read_meta
from trainer_worker.models.gpt2 import GPT2_PRESETS, build_gpt2
from trainer_worker.training.callbacks import ProgressInfo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(autouse=True)
def worker_logging() -> Iterator[None]:
    """Log as `trainctl worker` does (INFO), restoring the test runner's handlers after."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging("model-trainer-worker", level="INFO", stream=io.StringIO())
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


@pytest.fixture(autouse=True)
def worker_env(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> None:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)
    text = "\n\n".join(topics[key] for key in sorted(topics))[:60_000]
    (data_root / "corpus.txt").write_text(text, encoding="utf-8")


def _work(client: redis.Redis) -> None:
    SimpleWorker([Queue(TRAINING_QUEUE, connection=client)], connection=client).work(burst=True)


def _events(client: redis.Redis, run_id: str) -> list[Event]:
    return [d.event for d in EventBus(client).read(count=10_000) if d.event.run_id == run_id]


def _tokenizer(client: redis.Redis, kind: str = "char") -> str:
    enqueue_job(
        client,
        "train_tokenizer",
        f"tok-{kind}",
        {"kind": kind, "vocab_size": 300, "corpus": {"path": "corpus.txt"}},
    )
    _work(client)
    assert RunStateStore(client).status(f"tok-{kind}") is RunStatus.COMPLETED
    return f"tok-{kind}"


def _spec(tokenizer_id: str, family: str, **train: object) -> JsonObject:
    settings: JsonObject = {
        "max_steps": 30,
        "batch_size": 8,
        "block_size": 32,
        "learning_rate": 1e-2,
        "min_lr": 1e-3,
        "warmup_steps": 5,
        "eval_every": 15,
        "eval_batches": 4,
        "progress_every_steps": 5,
        "checkpoint_every": 15,
        "device": "cpu",
        "seed": 7,
    }
    settings.update({k: v for k, v in train.items() if isinstance(v, int | float | str)})
    return {
        "model": {"family": family, "preset": "tiny"},
        "tokenizer_id": tokenizer_id,
        "corpus": {"path": "corpus.txt"},
        "train": settings,
        "sample_max_new_tokens": 12,
    }


@pytest.mark.parametrize(("family", "tokenizer_kind"), [("gpt2", "bpe"), ("char_lstm", "char")])
def test_train_model_end_to_end(
    redis_client: redis.Redis, data_root: Path, family: str, tokenizer_kind: str
) -> None:
    tokenizer_id = _tokenizer(redis_client, tokenizer_kind)
    enqueue_job(redis_client, "train_model", "run-a", _spec(tokenizer_id, family), user_id=3)
    _work(redis_client)
    store = RunStateStore(redis_client)
    assert store.status("run-a") is RunStatus.COMPLETED, store.message("run-a")
    assert int(store.progress("run-a")["step"]) == 30
    assert int(store.progress("run-a")["last_checkpoint_step"]) == 30  # for GET /runs/{id}

    events = _events(redis_client, "run-a")
    kinds = [e.type.split(".", 1)[1] for e in events]
    assert kinds[:3] == ["job.queued.v1", "job.started.v1", "metrics.config.v1"]
    assert kinds[-2:] == ["metrics.completed.v1", "job.completed.v1"]
    evals = [e for e in events if isinstance(e, MetricsEval)]
    assert [e.payload.step for e in evals] == [0, 15, 30]
    assert evals[-1].payload.eval_loss < evals[0].payload.eval_loss - 0.5  # it learned
    assert [e.payload.step for e in events if isinstance(e, MetricsProgress)][-1] == 30
    checkpoints = [e for e in events if isinstance(e, MetricsCheckpoint)]
    assert [c.payload.step for c in checkpoints][-1] == 30
    completed = next(e for e in events if isinstance(e, MetricsCompleted))
    assert completed.payload.final_perplexity == pytest.approx(evals[-1].payload.perplexity)

    folder = data_root / "runs" / "run-a"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["seed"] == 7 and manifest["device"] == "cpu"
    assert {"torch", "transformers"} <= set(manifest["library_versions"])
    assert "model/model.safetensors" in manifest["artifacts"]
    metrics = json.loads((folder / "eval" / "metrics.json").read_text())
    assert metrics["final_perplexity"] < metrics["first_perplexity"]
    samples = [
        json.loads(line) for line in (folder / "eval" / "samples.jsonl").read_text().splitlines()
    ]
    assert [s["prompt"] for s in samples] == ["The ", "In Python, ", "A function "]
    assert all(isinstance(s["output"], str) for s in samples)
    # both were written; the default retention (last 1, best 1) keeps only step 30
    assert [c.payload.step for c in checkpoints] == [15, 30]
    saved = list_checkpoints(folder / "checkpoints")
    assert [read_meta(c).step for c in saved] == [30]
    index = json.loads((folder / "checkpoints" / "index.json").read_text())
    assert [row["step"] for row in index] == [30]
    logs = [json.loads(line) for line in (folder / "logs.jsonl").read_text().splitlines()]
    assert {"training.started", "training.progress"} <= {r.get("event") for r in logs}
    progress = [r for r in logs if r.get("event") == "training.progress"]
    assert all(r["lr"] > 0 for r in progress)  # the chart's learning-rate curve
    assert all(r["run_id"] == "run-a" for r in logs)

    # same spec and seed on another run id: identical losses and samples
    enqueue_job(redis_client, "train_model", "run-b", _spec(tokenizer_id, family))
    _work(redis_client)
    again = [
        json.loads(line)
        for line in (data_root / "runs" / "run-b" / "eval" / "samples.jsonl")
        .read_text()
        .splitlines()
    ]
    assert again == samples
    first = [e.payload.eval_loss for e in evals]
    second = [
        e.payload.eval_loss for e in _events(redis_client, "run-b") if isinstance(e, MetricsEval)
    ]
    assert second == pytest.approx(first, abs=1e-6)


def test_cancelled_run_stops_within_a_few_steps_and_keeps_a_checkpoint(
    redis_client: redis.Redis, redis_url: str, data_root: Path
) -> None:
    tokenizer_id = _tokenizer(redis_client)
    spec = _spec(
        tokenizer_id, "char_lstm", max_steps=5000, checkpoint_every=100_000, progress_every_steps=1
    )
    enqueue_job(redis_client, "train_model", "run-c", spec)
    requested_at: list[float] = []

    def cancel_after_step_5() -> None:
        client = redis.Redis.from_url(redis_url)
        bus, after = EventBus(client), "0-0"
        while True:
            for delivery in bus.read(after, block_ms=200):
                after = delivery.id
                event = delivery.event
                if (
                    isinstance(event, MetricsProgress)
                    and event.run_id == "run-c"
                    and event.payload.step >= 5
                ):
                    requested_at.append(time.time())
                    request_cancel(client, "run-c")
                    client.close()
                    return

    canceller = threading.Thread(target=cancel_after_step_5)
    canceller.start()
    _work(redis_client)
    canceller.join(timeout=30)
    store = RunStateStore(redis_client)
    assert store.status("run-c") is RunStatus.CANCELLED
    cancelled = _events(redis_client, "run-c")[-1]
    assert isinstance(cancelled, JobCancelled)
    assert cancelled.payload.stage == "cooperative"
    # the flag is polled every CANCEL_POLL_S (0.1 s): ~30 Char-LSTM steps at most on a quiet
    # machine, then the final checkpoint; a run that ignored it would go on to step 5000
    assert cancelled.payload.step is not None and 5 <= cancelled.payload.step <= 100
    assert cancelled.ts.timestamp() - requested_at[0] < 2.0
    assert cancelled.payload.message.startswith("cancelled at step")
    saved = list_checkpoints(data_root / "runs" / "run-c" / "checkpoints")
    assert [read_meta(c).step for c in saved] == [cancelled.payload.step]
    manifest = json.loads((data_root / "runs" / "run-c" / "manifest.json").read_text())
    assert manifest["status"] == "cancelled"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"model": {"family": "transformer-xl"}}, ErrorCode.INVALID_INPUT),
        ({"train": {"learning_rate": -1.0}}, ErrorCode.INVALID_INPUT),
        # each was accepted once and failed the run as INTERNAL, some after every step
        ({"train": {"seed": 2**64}}, ErrorCode.INVALID_INPUT),
        ({"train": {"max_steps": "10"}}, ErrorCode.INVALID_INPUT),
        ({"sample_prompts": ["x" * 30_000]}, ErrorCode.INVALID_INPUT),
        ({"model": {"family": "gpt2", "pretrained": "../model"}}, ErrorCode.INVALID_INPUT),
        ({"tokenizer_id": "no-such-tokenizer"}, ErrorCode.DATA_NOT_FOUND),
        ({"corpus": {"path": "missing.txt"}}, ErrorCode.DATA_NOT_FOUND),
        ({"corpus": {"path": "../outside.txt"}}, ErrorCode.PATH_OUTSIDE_DATA_ROOT),
        ({"surprise": 1}, ErrorCode.INVALID_INPUT),
    ],
)
def test_bad_specs_fail_fast_as_user_input_without_artifacts(
    redis_client: redis.Redis, data_root: Path, change: JsonObject, code: ErrorCode
) -> None:
    tokenizer_id = _tokenizer(redis_client)
    spec = _spec(tokenizer_id, "char_lstm")
    spec.update(change)
    enqueue_job(redis_client, "train_model", "run-bad", spec)
    _work(redis_client)
    failed = _events(redis_client, "run-bad")[-1]
    assert isinstance(failed, JobFailed)
    assert failed.payload.error_code is code, failed.payload.message
    assert failed.payload.failure_class == "USER_INPUT"
    assert not failed.payload.retrying
    assert RunStateStore(redis_client).status("run-bad") is RunStatus.FAILED
    assert not (data_root / "runs" / "run-bad").exists()


class _Crash(BaseException):
    """Stands in for a worker killed mid-step: nothing in the job catches it."""


def test_crashes_before_any_checkpoint_never_publish_a_step_twice(
    redis_client: redis.Redis, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two attempts die before their first checkpoint (each restarts from step 0, in the same
    folder); the third completes. Every step and eval is published once, in order."""
    monkeypatch.setattr(queue, "TRANSIENT_RETRY", (0, 0))  # RQ retries a crash at once
    crash_at = [12, 22]  # attempt 1 dies at step 12, attempt 2 at step 22
    real = run_callbacks.RunCallbacks.on_progress

    def crashing(self: run_callbacks.RunCallbacks, info: ProgressInfo) -> None:
        real(self, info)
        if crash_at and info.step == crash_at[0]:
            crash_at.pop(0)
            raise _Crash

    monkeypatch.setattr(run_callbacks.RunCallbacks, "on_progress", crashing)
    tokenizer_id = _tokenizer(redis_client)
    spec = _spec(tokenizer_id, "char_lstm", progress_every_steps=2, checkpoint_every=1000)
    enqueue_job(redis_client, "train_model", "run-x", spec)
    _work(redis_client)
    store = RunStateStore(redis_client)
    assert store.status("run-x") is RunStatus.COMPLETED, store.message("run-x")
    assert store.attempts("run-x") == 3
    events = _events(redis_client, "run-x")
    steps = [e.payload.step for e in events if isinstance(e, MetricsProgress)]
    assert steps == sorted(set(steps)) and steps[-1] == 30
    evals = [e.payload.step for e in events if isinstance(e, MetricsEval)]
    assert evals == [0, 15, 30]
    started = [e.payload.attempt for e in events if isinstance(e, JobStarted)]
    assert started == [1, 2, 3]
    folder = data_root / "runs" / "run-x"
    assert (folder / "logs.jsonl").is_file()  # the folder was kept across the restarts


def test_a_data_folder_trains_and_one_linking_out_of_the_root_is_refused(
    redis_client: redis.Redis, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data:<folder>` is resolved inside the data root; a folder of the same name in the
    worker's working directory is never what a hub id loads."""
    tokenizer_id = _tokenizer(redis_client)
    build_gpt2(GPT2_PRESETS["tiny"], 300, None).save_pretrained(data_root / "models" / "tiny")
    outside = tmp_path / "outside"
    build_gpt2(GPT2_PRESETS["tiny"], 300, None).save_pretrained(outside / "models" / "tiny")
    (data_root / "models" / "linked").symlink_to(outside / "models" / "tiny")
    monkeypatch.chdir(outside)  # holds models/tiny too: a relative lookup would find it
    for run_id, pretrained in (("run-d", "data:models/tiny"), ("run-l", "data:models/linked")):
        spec = _spec(tokenizer_id, "gpt2", max_steps=2, eval_every=1, checkpoint_every=2)
        spec["model"] = {"family": "gpt2", "pretrained": pretrained}
        enqueue_job(redis_client, "train_model", run_id, spec)
    _work(redis_client)
    assert RunStateStore(redis_client).status("run-d") is RunStatus.COMPLETED
    # inference rebuilds the architecture from the same data: folder
    enqueue_inference(
        redis_client, "generate", "run-d", "g-1", {"prompt": "a", "max_new_tokens": 2}
    )
    SimpleWorker([Queue(INFERENCE_QUEUE, connection=redis_client)], connection=redis_client).work(
        burst=True
    )
    record = load_record(redis_client, "generate", "g-1")
    assert record is not None and record.status == "completed", record
    refused = _events(redis_client, "run-l")[-1]
    assert isinstance(refused, JobFailed)
    assert refused.payload.error_code is ErrorCode.PATH_OUTSIDE_DATA_ROOT
