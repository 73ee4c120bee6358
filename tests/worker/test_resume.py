"""Fault tests with real processes: a worker killed mid-run, a corrupted newest checkpoint,
and a process killed while it saves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from pydoc_data.topics import topics

import pytest
import redis
import torch
from rq import Queue, SimpleWorker
from safetensors.torch import load_file

from platform_core.event_bus import EventBus
from platform_core.events import JobProgress, JobStarted, MetricsEval, MetricsProgress
from platform_core.json_types import JsonObject
from platform_core.queue import TRAINING_QUEUE, enqueue_job, requeue_stale_runs
from platform_core.run_state import RunStateStore, RunStatus
from tests.processes import children
from trainer_worker.checkpoints import list_checkpoints, verify_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).parents[2]


def _env(data_root: Path, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP__")}
    env.update({"APP__DATA_ROOT": str(data_root), "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)})
    return env


def _worker(data_root: Path, redis_url: str, *, burst: bool) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "trainer_cli",
        "worker",
        "--queues",
        TRAINING_QUEUE,
    ]
    return subprocess.Popen(
        [*command, "--burst"] if burst else command,
        env=_env(data_root, redis_url),
        start_new_session=True,  # the worker and its work horse, killed together
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _spec(ema_decay: float | None = None) -> JsonObject:
    train: JsonObject = {
        "max_steps": 400,
        "batch_size": 8,
        "block_size": 32,
        "learning_rate": 3e-3,
        "min_lr": 3e-4,
        "warmup_steps": 10,
        "eval_every": 50,
        "eval_batches": 4,
        "checkpoint_every": 20,
        "progress_every_steps": 10,
        "device": "cpu",
        "seed": 3,
    }
    if ema_decay is not None:
        train["ema_decay"] = ema_decay
    return {
        "model": {"family": "gpt2", "preset": "tiny"},
        "tokenizer_id": "tok",
        "corpus": {"path": "corpus.txt"},
        "train": train,
        "retention": {"keep_last_n": 3},
        "sample_max_new_tokens": 4,
    }


@pytest.fixture
def prepared(redis_client: redis.Redis, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    text = "\n\n".join(topics[key] for key in sorted(topics))[:60_000]
    (data_root / "corpus.txt").write_text(text, encoding="utf-8")
    spec: JsonObject = {"kind": "bpe", "vocab_size": 300, "corpus": {"path": "corpus.txt"}}
    enqueue_job(redis_client, "train_tokenizer", "tok", spec)
    SimpleWorker([Queue(TRAINING_QUEUE, connection=redis_client)], connection=redis_client).work(
        burst=True
    )
    return data_root


def _kill_with_children(pid: int) -> None:
    for victim in [pid, *children(pid)]:
        os.kill(victim, signal.SIGKILL)


def _newest_step(folder: Path) -> int:
    index = folder / "checkpoints" / "index.json"
    if not index.is_file():
        return -1
    rows = json.loads(index.read_text())
    return max((row["step"] for row in rows), default=-1)


def _final_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model" / "model.safetensors")


@pytest.mark.parametrize(
    ("corrupt_newest", "ema_decay"),
    [(False, None), (True, None), (False, 0.95)],
    ids=["killed", "killed-and-corrupted", "killed-with-a-moving-average"],
)
def test_killed_worker_resumes_to_the_same_weights_without_repeating_metrics(
    prepared: Path,
    redis_client: redis.Redis,
    redis_url: str,
    corrupt_newest: bool,
    ema_decay: float | None,
) -> None:
    data_root = prepared
    store = RunStateStore(redis_client)
    # the reference: the same spec, never interrupted, in the same kind of process
    enqueue_job(redis_client, "train_model", "ref", _spec(ema_decay))
    assert _worker(data_root, redis_url, burst=True).wait(240) == 0
    assert store.status("ref") is RunStatus.COMPLETED

    enqueue_job(redis_client, "train_model", "victim", _spec(ema_decay))
    worker = _worker(data_root, redis_url, burst=False)
    folder = data_root / "runs" / "victim"
    deadline = time.monotonic() + 240
    while _newest_step(folder) < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    _kill_with_children(worker.pid)  # the machine "dies": worker and work horse at once
    worker.wait(10)
    killed_at = _newest_step(folder)
    assert 100 <= killed_at < 400, "the worker must die mid-run"
    assert store.status("victim") is RunStatus.RUNNING  # nobody told Redis it died

    if corrupt_newest:
        newest = list_checkpoints(folder / "checkpoints")[-1]
        weights = newest / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[len(data) // 3] ^= 0x5A
        weights.write_bytes(bytes(data))

    time.sleep(1.2)  # the heartbeat has stopped: the run is now stale
    assert requeue_stale_runs(redis_client, stale_after_s=1.0) == ["victim"]
    assert _worker(data_root, redis_url, burst=True).wait(240) == 0
    assert store.status("victim") is RunStatus.COMPLETED, store.message("victim")

    expected, got = _final_weights(data_root / "runs" / "ref"), _final_weights(folder)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6, rtol=0), name

    events = [
        d.event for d in EventBus(redis_client).read(count=100_000) if d.event.run_id == "victim"
    ]
    progress = [e.payload.step for e in events if isinstance(e, MetricsProgress)]
    evals = [e.payload.step for e in events if isinstance(e, MetricsEval)]
    assert progress == sorted(set(progress)), str(progress)  # no step twice
    assert progress[-1] == 400
    assert evals == sorted(set(evals)) and evals[-1] == 400
    # each attempt announces itself before anything else it publishes (before preparing
    # anything), the second one with the newest checkpoint it found; the resume notice that
    # follows names the step it really resumed from (an older one past a corrupt newest)
    starts = [e for e in events if isinstance(e, JobStarted)]
    assert [(e.payload.attempt, e.payload.resumed_from_step) for e in starts] == [
        (1, None),
        (2, killed_at),
    ]
    notice = next(
        e for e in events if isinstance(e, JobProgress) and e.payload.message.startswith("resumed")
    )
    assert events.index(notice) > events.index(starts[1])
    resumed_at = killed_at - 20 if corrupt_newest else killed_at
    assert notice.payload.step == resumed_at
    history = [
        json.loads(line)["step"]
        for line in (folder / "eval" / "history.jsonl").read_text().splitlines()
    ]
    assert history == sorted(set(history))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["resumed_from_step"] == resumed_at
    logs = (folder / "logs.jsonl").read_text()
    assert ("skipped corrupt" in logs) is corrupt_newest


def test_a_process_killed_while_saving_never_leaves_a_visible_partial_checkpoint(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "checkpoints"
    # kills at assorted moments of the save loop (a save takes ~0.1 s); the last one waits
    # for a published checkpoint first, so the check below is never vacuous
    for delay in (0.01, 0.05, 0.12, 0.2, None):
        writer = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).parent / "checkpoint_writer_main.py"),
                str(directory),
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
        )
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"ready\n"
        if delay is not None:
            time.sleep(delay)
        else:
            deadline = time.monotonic() + 60
            while not list_checkpoints(directory) and time.monotonic() < deadline:
                time.sleep(0.005)
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        writer.stdout.close()
        for checkpoint in list_checkpoints(directory):
            verify_checkpoint(checkpoint)  # raises if anything visible is partial or damaged
    assert list_checkpoints(directory), "the writer saved at least one checkpoint"
