"""`trainctl worker` as a user runs it: real processes on a real Redis, real (tiny) jobs; the
worker's maintenance thread."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from platform_core.event_bus import EventBus
from platform_core.events import JobCancelled
from platform_core.queue import enqueue_job
from platform_core.run_state import RunStateStore, RunStatus
from trainer_cli.main import main
from trainer_worker import defaults
from trainer_worker.worker import maintain


def _env(data_root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP__") and k != "REDIS_URL"}
    env.update({"APP__DATA_ROOT": str(data_root), "PYTHONUNBUFFERED": "1", **extra})
    return env


@pytest.mark.integration
def test_worker_burst_runs_queued_jobs(
    redis_client: redis.Redis, redis_url: str, data_root: Path
) -> None:
    enqueue_job(redis_client, "train_tokenizer", "tok-cli", {"kind": "char"})
    result = subprocess.run(
        [sys.executable, "-m", "trainer_cli", "worker", "--burst"],
        env=_env(data_root, REDIS_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert RunStateStore(redis_client).status("tok-cli") is RunStatus.COMPLETED


@pytest.mark.integration
def test_an_idle_worker_takes_a_new_job_at_once_without_redis_timeouts(
    redis_client: redis.Redis, redis_url: str, data_root: Path, tmp_path: Path
) -> None:
    """An idle worker waits minutes in one BLPOP: a read timeout as short as the connect
    timeout (0.5 s here) made it log timeout errors and back off before taking a job."""
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "trainer_cli", "worker", "--queues", "training"],
            env=_env(data_root, REDIS_URL=redis_url, APP__REDIS__CONNECT_TIMEOUT_S="0.5"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "Listening on" not in log_path.read_text() and time.monotonic() < deadline:
            assert worker.poll() is None, log_path.read_text()[-2000:]
            time.sleep(0.1)
        time.sleep(4)  # idle for many read timeouts' worth
        enqueue_job(redis_client, "train_tokenizer", "tok-idle", {"kind": "char"})
        enqueued = time.monotonic()
        store = RunStateStore(redis_client)
        while store.status("tok-idle") is RunStatus.QUEUED and time.monotonic() - enqueued < 30:
            time.sleep(0.05)
        picked_up_s = time.monotonic() - enqueued
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    text = log_path.read_text()
    assert picked_up_s < 2.0, text[-2000:]
    assert "could not connect to Redis" not in text and "Timeout" not in text, text[-2000:]


def test_unreachable_redis_is_a_clear_error_and_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data_root: Path
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:secret@127.0.0.1:9/0")
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    code = main(["worker", "--burst"])
    err = capsys.readouterr().err
    assert code == 1
    assert "REDIS_UNAVAILABLE" in err and "secret" not in err


def test_bad_settings_exit_with_the_config_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("APP__API__PORT", "not-a-port")
    assert main(["worker", "--burst"]) == 2
    assert "APP__API__PORT" in capsys.readouterr().err


@pytest.mark.integration
def test_maintenance_forces_stuck_cancellations_and_survives_redis_errors(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(defaults, "MAINTENANCE_INTERVAL_S", 0.01)
    monkeypatch.setattr(defaults, "CANCEL_GRACE_S", 0.0)
    store = RunStateStore(redis_client)
    store.set_status("stuck", RunStatus.RUNNING)
    store.request_cancel("stuck", now=1.0)
    stop = threading.Event()
    bus = EventBus(redis_client, stream="custom:events")
    thread = threading.Thread(target=maintain, args=(bus, stop))
    thread.start()
    try:
        for _ in range(500):
            if store.status("stuck") is RunStatus.CANCELLED:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join()
    assert store.status("stuck") is RunStatus.CANCELLED
    assert [type(d.event) for d in bus.read()] == [JobCancelled]  # on the configured stream

    broken = redis.Redis(port=9, socket_connect_timeout=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=maintain, args=(EventBus(broken), stop))
    with caplog.at_level(logging.WARNING):
        thread.start()
        stop.wait(0.2)
        stop.set()
        thread.join()
    assert any(r.message == "maintenance round failed" for r in caplog.records)


def test_the_checkpoint_commands_get_their_arguments_when_chosen(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data_root: Path
) -> None:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    assert main(["list-checkpoints", "--run", "missing"]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["cleanup", "--dry-run"]) == 0
    with pytest.raises(SystemExit):
        main(["cleanup", "--no-such-flag"])
    assert "--no-such-flag" in capsys.readouterr().err
