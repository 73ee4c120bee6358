"""A real uvicorn server running the API in a thread, on a free port, against the real Redis;
the project's own client on it; and what the resource tests share (a corpus, a tiny run spec,
an in-process worker)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from pydoc_data.topics import topics

import pytest
import redis
import uvicorn
from rq import Queue, SimpleWorker

from platform_core.api_models import RunCreate, TokenizerCreate
from platform_core.event_bus import EventBus
from platform_core.events import JobCompleted, JobCompletedPayload
from platform_core.http_client import TrainerClient
from platform_core.inference_results import enqueue_inference
from platform_core.manifests import (
    CorpusRecord,
    EvalPoint,
    MetricsSummary,
    RunManifest,
    TokenizerManifest,
    TokenizerStats,
    write_manifest,
)
from platform_core.queue import TRAINING_QUEUE
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.settings import Settings, load_settings
from platform_core.specs import CorpusOptions, ModelSpec, TokenizerSpec, TrainConfig, TrainRunSpec
from trainer_api import streams
from trainer_api.main import create_app


@dataclass(frozen=True)
class LiveApi:
    base_url: str
    settings: Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve(settings: Settings) -> Iterator[LiveApi]:
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    try:
        yield LiveApi(f"http://127.0.0.1:{port}", settings)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def api_settings(monkeypatch: pytest.MonkeyPatch, redis_url: str, data_root: Path) -> Settings:
    monkeypatch.setenv("APP__REDIS__URL", redis_url)
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    return load_settings()


@pytest.fixture
def live_api(api_settings: Settings, redis_client: object) -> Iterator[LiveApi]:
    yield from serve(api_settings)


# ---- shared by the resource tests ------------------------------------------------------------

CORPUS_FILE = "corpus.txt"


@pytest.fixture
def client(live_api: LiveApi) -> Iterator[TrainerClient]:
    with TrainerClient(live_api.base_url, backoff_s=0.0) as trainer:
        yield trainer


@pytest.fixture
def corpus(data_root: Path) -> str:
    """A small text corpus inside the data root, as its relative path."""
    text = "\n\n".join(topics[key] for key in sorted(topics))[:30_000]
    (data_root / CORPUS_FILE).write_text(text, encoding="utf-8")
    return CORPUS_FILE


def work(client: redis.Redis, queue: str = TRAINING_QUEUE) -> None:
    """Run every job waiting in `queue` in this process, as a worker would."""
    SimpleWorker([Queue(queue, connection=client)], connection=client).work(burst=True)


def tiny_run_spec(tokenizer_id: str, corpus_path: str) -> TrainRunSpec:
    """A char-LSTM run that trains in a couple of seconds on the CPU."""
    return TrainRunSpec(
        model=ModelSpec(family="char_lstm", preset="tiny"),
        tokenizer_id=tokenizer_id,
        corpus=CorpusOptions(path=corpus_path),
        train=TrainConfig(
            max_steps=20,
            batch_size=8,
            block_size=32,
            eval_every=10,
            eval_batches=2,
            warmup_steps=2,
            learning_rate=1e-2,
            min_lr=1e-3,
            device="cpu",
        ),
        sample_max_new_tokens=4,
    )


def char_tokenizer(
    corpus_path: str | None, tokenizer_id: str | None = None, *, user_id: int | None = None
) -> TokenizerCreate:
    spec = TokenizerSpec(kind="char", corpus=CorpusOptions(path=corpus_path))
    return TokenizerCreate(spec=spec, tokenizer_id=tokenizer_id, user_id=user_id)


def tiny_run(
    tokenizer_id: str, corpus_path: str, run_id: str | None = None, *, user_id: int | None = None
) -> RunCreate:
    return RunCreate(spec=tiny_run_spec(tokenizer_id, corpus_path), run_id=run_id, user_id=user_id)


@pytest.fixture
def known(redis_client: redis.Redis, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trained tokenizer `tok-1`; a finished run `run-1` with every artifact, its terminal
    event, and generate / score / evaluate requests on it (`gen-1`, `score-1`, `eval-1`)."""
    monkeypatch.setattr(streams, "FINISH_GRACE_S", 0.0)
    tokenizer = data_root / "tokenizers" / "tok-1"
    tokenizer.mkdir(parents=True)
    stats = TokenizerStats(
        coverage=1.0,
        oov_rate=0.0,
        tokens_per_char=1.0,
        tokens_per_word=5.0,
        num_holdout_chars=10,
        num_holdout_tokens=10,
    )
    created = datetime(2026, 1, 1, tzinfo=UTC)
    tokenizer_manifest = TokenizerManifest(
        id="tok-1",
        kind="char",
        spec=TokenizerSpec(kind="char"),
        config={},
        corpus=CorpusRecord(source="corpus.txt", sha256="0" * 64),
        stats=stats,
        vocab_size=40,
        eos_id=None,
        pad_id=None,
        unk_id=None,
        files=[],
        library_versions={},
        created_at=created,
        duration_s=0.5,
    )
    write_manifest(tokenizer / "manifest.json", tokenizer_manifest)
    run = data_root / "runs" / "run-1"
    (run / "eval").mkdir(parents=True)
    metrics = MetricsSummary(
        steps=2, best_eval_loss=2.0, eval_history=[EvalPoint(step=0, eval_loss=2.0)]
    )
    run_manifest = RunManifest(
        run_id="run-1",
        kind="train_model",
        status=RunStatus.COMPLETED,
        spec={},
        started_at=created,
        metrics=metrics,
    )
    write_manifest(run / "manifest.json", run_manifest)
    write_manifest(run / "eval" / "metrics.json", metrics)
    (run / "eval" / "samples.jsonl").write_text('{"prompt": "a", "output": "b", "seed": 1}\n')
    (run / "logs.jsonl").write_text('{"message": "hello", "level": "INFO"}\n')
    store = RunStateStore(redis_client)
    store.set_meta("run-1", kind="train_model", user_id=3, spec_json="{}")
    store.set_status("run-1", RunStatus.RUNNING)
    store.set_status("run-1", RunStatus.COMPLETED, message="done")
    payload = JobCompletedPayload(duration_s=1.0)
    EventBus(redis_client).publish(JobCompleted(run_id="run-1", payload=payload))
    enqueue_inference(redis_client, "generate", "run-1", "gen-1", {"prompt": "a"})
    enqueue_inference(redis_client, "score", "run-1", "score-1", {"text": "a"})
    enqueue_inference(redis_client, "evaluate", "run-1", "eval-1", {})
    enqueue_inference(redis_client, "predict", "run-1", "pred-1", {"texts": ["a"]})
