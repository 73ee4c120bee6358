"""A run's events and ending survive Redis going away and coming back: held on disk, sent in
order with their own ids, none lost, none twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import torch
from safetensors.torch import load_file

from platform_core.event_bus import EventBus
from platform_core.events import (
    Event,
    JobProgress,
    JobProgressPayload,
    MetricsEval,
    MetricsProgress,
)
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.redis_connection import connect
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.specs import TokenizerSpec
from tests.redis_server import StoppableRedis
from trainer_worker import event_spool, job_context
from trainer_worker.event_spool import EventSpool
from trainer_worker.job_context import JobContext, Outcome, run_job
from trainer_worker.model_run import train_model_body
from trainer_worker.tokenizers.artifacts import train_tokenizer_artifact

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoppableRedis]:
    monkeypatch.setattr(event_spool, "FIRST_RETRY_S", 0.05)
    monkeypatch.setattr(event_spool, "MAX_RETRY_S", 0.2)
    folder = tmp_path / "redis"
    folder.mkdir()
    with StoppableRedis(folder) as running:
        yield running


def _progress(step: int) -> JobProgress:
    payload = JobProgressPayload(step=step, total_steps=10, epoch=0, fraction=step / 10)
    return JobProgress(run_id="r", payload=payload)


def _read_all(url: str) -> list[Event]:
    client = connect(url)
    try:
        return [d.event for d in EventBus(client).read(count=1000)]
    finally:
        client.close()


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_events_are_held_during_an_outage_and_sent_in_order_after(
    server: StoppableRedis, tmp_path: Path
) -> None:
    spool_file = tmp_path / "spool" / "r.events.jsonl"
    client = connect(server.url)
    spool = EventSpool(EventBus(client), spool_file)
    sent = [_progress(step) for step in range(6)]
    spool.publish(sent[0])
    server.stop()
    for event in sent[1:4]:
        spool.publish(event)  # returns at once: training is never held up
    assert not spool.healthy and spool.held == 3 and spool_file.is_file()
    server.start()
    spool.publish(sent[4])  # joins the queue behind the held ones
    _wait_for(lambda: spool.healthy)
    spool.publish(sent[5])
    spool.close()
    assert not spool_file.exists()
    assert [e.event_id for e in _read_all(server.url)] == [e.event_id for e in sent]


def test_events_held_by_a_dead_attempt_are_sent_by_the_next(
    server: StoppableRedis, tmp_path: Path
) -> None:
    spool_file = tmp_path / "r.events.jsonl"
    first = EventSpool(EventBus(connect(server.url)), spool_file)
    server.stop()
    held = [_progress(1), _progress(2)]
    for event in held:
        first.publish(event)
    first.close()  # the attempt dies with Redis still down: the file keeps its events
    spool_file.write_bytes(spool_file.read_bytes() + b'{"cut": ')  # a torn last line
    server.start()
    second = EventSpool(EventBus(connect(server.url)), spool_file)
    assert second.held == 2
    assert second.flush(timeout_s=5.0)
    assert [e.event_id for e in _read_all(server.url)] == [e.event_id for e in held]


def test_a_run_goes_on_through_an_outage_and_ends_completed(
    server: StoppableRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_context, "FINAL_WRITE_WAIT_S", 20.0)
    client = connect(server.url)
    layout = DataLayout(tmp_path / "data")
    down, back = threading.Event(), threading.Event()

    def body(context: JobContext) -> Outcome:
        context.progress(step=1, total_steps=4, epoch=0, eta_s=None)
        down.set()
        back.wait(10)  # Redis is gone: progress, the cancel flag and the mark keep going
        for step in (2, 3, 4):
            context.progress(step=step, total_steps=4, epoch=0, eta_s=None)
            assert not context.should_stop()
            context.mark_published(step)
        return Outcome(result={}, message="done")

    def outage() -> None:
        down.wait(10)
        server.stop()
        back.set()
        time.sleep(1.0)
        server.start()

    outages = threading.Thread(target=outage)
    outages.start()
    RunStateStore(client).set_status("r", RunStatus.QUEUED)
    result = run_job("train_model", "r", body, bus=EventBus(client), layout=layout)
    outages.join()
    assert result["status"] == "completed"
    events = _read_all(server.url)
    assert [type(e).__name__ for e in events] == ["JobStarted"] + ["JobProgress"] * 4 + [
        "JobCompleted"
    ]
    assert len({e.event_id for e in events}) == len(events)
    assert RunStateStore(client).status("r") is RunStatus.COMPLETED
    assert not layout.spool_file("r").exists()


def test_the_worker_skips_live_calls_while_held(
    server: StoppableRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While events are held, no per-step call waits for a Redis that does not answer."""
    client = connect(server.url)
    calls: list[str] = []

    def counted(self: redis.Redis, *args: object, **kwargs: object) -> object:
        calls.append(str(args[0]) if args else "")
        raise redis.ConnectionError("down")

    spool = EventSpool(EventBus(client), tmp_path / "s.jsonl")
    server.stop()
    spool.publish(_progress(1))
    context = JobContext(
        run_id="r",
        kind="train_model",
        user_id=None,
        attempt=1,
        layout=DataLayout(tmp_path),
        spool=spool,
        store=RunStateStore(client),
    )
    monkeypatch.setattr(redis.Redis, "execute_command", counted)
    context.progress(step=2, total_steps=3, epoch=0, eta_s=None)
    assert not context.should_stop()
    assert context.mark_published(2) == 2
    assert calls == []
    spool.close()


def _train_spec() -> JsonObject:
    train: JsonObject = {
        "max_steps": 120,
        "batch_size": 8,
        "block_size": 32,
        "learning_rate": 1e-2,
        "min_lr": 1e-3,
        "warmup_steps": 5,
        "eval_every": 40,
        "eval_batches": 2,
        "progress_every_steps": 5,
        "checkpoint_every": 40,
        "device": "cpu",
        "seed": 11,
    }
    return {
        "model": {"family": "char_lstm", "preset": "tiny"},
        "tokenizer_id": "tok",
        "train": train,
        "sample_max_new_tokens": 4,
    }


def _train(run_id: str, client: redis.Redis, layout: DataLayout) -> JsonObject:
    RunStateStore(client).set_status(run_id, RunStatus.QUEUED)
    spec = _train_spec()
    return run_job(
        "train_model",
        run_id,
        lambda context: train_model_body(spec, context),
        bus=EventBus(client),
        layout=layout,
    )


@pytest.mark.slow
def test_a_real_run_through_a_redis_outage_matches_an_uninterrupted_one(
    server: StoppableRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis goes away for over a second while a real model trains: the run completes, every
    progress step and eval arrives exactly once and in order, and the weights are those of
    the same run without an outage."""
    monkeypatch.setattr(job_context, "FINAL_WRITE_WAIT_S", 30.0)
    layout = DataLayout(tmp_path / "data")
    layout.root.mkdir()
    train_tokenizer_artifact("tok", TokenizerSpec(kind="char"), layout.root)
    client = connect(server.url)
    assert _train("calm", client, layout)["status"] == "completed"

    def outage() -> None:
        watcher = RunStateStore(connect(server.url))
        deadline = time.monotonic() + 120
        while int(float(watcher.progress("blink").get("step", "0"))) < 40:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        server.stop()
        time.sleep(1.5)
        server.start()

    outages = threading.Thread(target=outage)
    outages.start()
    result = _train("blink", client, layout)
    outages.join()
    assert result["status"] == "completed"
    assert RunStateStore(client).status("blink") is RunStatus.COMPLETED

    def figures(run_id: str) -> tuple[list[int], list[int], list[str]]:
        events = [e for e in _read_all(server.url) if e.run_id == run_id]
        progress = [e.payload.step for e in events if isinstance(e, MetricsProgress)]
        evals = [e.payload.step for e in events if isinstance(e, MetricsEval)]
        lifecycle = [e.type.split(".")[2] for e in events if e.type.startswith("trainer.job.")]
        return progress, evals, lifecycle

    assert figures("blink") == figures("calm")
    progress, evals, lifecycle = figures("blink")
    assert progress == list(range(5, 121, 5)) and evals == [0, 40, 80, 120]
    assert lifecycle == ["started", *["progress"] * lifecycle.count("progress"), "completed"]
    calm = load_file(layout.model_dir("calm") / "model.safetensors")
    blink = load_file(layout.model_dir("blink") / "model.safetensors")
    assert calm.keys() == blink.keys()
    for name in calm:
        assert torch.equal(calm[name], blink[name]), name
