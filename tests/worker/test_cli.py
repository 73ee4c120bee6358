"""trainctl as a user runs it: real processes, a real Redis, real (tiny) training."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from platform_core.events import (
    JobFailed,
    JobProgress,
    JobProgressPayload,
    JobQueued,
    JobQueuedPayload,
    JobStarted,
    JobStartedPayload,
    MetricsEval,
    MetricsEvalPayload,
)
from platform_core.queue import enqueue_job
from platform_core.run_state import RunStateStore, RunStatus
from tests.platform_core.event_samples import samples
from trainer_worker import defaults
from trainer_worker.cli.main import main
from trainer_worker.cli.progress import ProgressView, describe, format_duration, render_bar
from trainer_worker.worker import maintain

ROOT = Path(__file__).parents[2]


def _env(data_root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP__") and k != "REDIS_URL"}
    env.update({"APP__DATA_ROOT": str(data_root), "PYTHONUNBUFFERED": "1", **extra})
    return env


@pytest.mark.integration
@pytest.mark.slow
def test_demo_main_job_runs_end_to_end_on_the_embedded_redis(data_root: Path) -> None:
    """The README's main job, small: embedded Redis, a worker process, two runs followed live."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer_worker.cli.main",
            "demo",
            "--steps",
            "30",
            "--vocab-size",
            "300",
        ],
        cwd=data_root,
        env=_env(data_root),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert "eval perplexity: first" in result.stdout
    assert "sample: 'The '" in result.stdout
    runs = list((data_root / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "manifest.json").is_file()
    # the embedded server was stopped once the last process released it
    assert not (data_root / "redis" / "redis.json").exists()


@pytest.mark.integration
def test_worker_burst_runs_queued_jobs(
    redis_client: redis.Redis, redis_url: str, data_root: Path
) -> None:
    enqueue_job(redis_client, "train_tokenizer", "tok-cli", {"kind": "char"})
    result = subprocess.run(
        [sys.executable, "-m", "trainer_worker.cli.main", "worker", "--burst"],
        env=_env(data_root, REDIS_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert RunStateStore(redis_client).status("tok-cli") is RunStatus.COMPLETED


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
    thread = threading.Thread(target=maintain, args=(redis_client, stop))
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

    broken = redis.Redis(port=9, socket_connect_timeout=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=maintain, args=(broken, stop))
    with caplog.at_level(logging.WARNING):
        thread.start()
        stop.wait(0.2)
        stop.set()
        thread.join()
    assert any(r.message == "maintenance round failed" for r in caplog.records)


def test_progress_view_plain_output() -> None:
    out = io.StringIO()
    view = ProgressView(out=out, live=False)
    view.handle(
        JobQueued(run_id="r", payload=JobQueuedPayload(kind="train_model", queue="training"))
    )
    view.handle(
        JobStarted(run_id="r", payload=JobStartedPayload(kind="train_model", worker="w", attempt=1))
    )
    for step in range(0, 101, 5):
        view.handle(
            JobProgress(
                run_id="r",
                payload=JobProgressPayload(
                    step=step, total_steps=100, epoch=0, fraction=step / 100, eta_s=100 - step
                ),
            )
        )
    view.handle(
        MetricsEval(
            run_id="r", payload=MetricsEvalPayload(step=100, eval_loss=2.0, perplexity=7.39)
        )
    )
    lines = out.getvalue().splitlines()
    assert lines[0] == "queued on 'training'"
    progress_lines = [line for line in lines if "step " in line and "eval" not in line]
    assert len(progress_lines) == 11  # one per 10%, not one per event
    assert lines[-1] == "eval @ step 100: loss 2.0000, perplexity 7.39"
    assert view.evals == [(100, 7.39)]


def test_progress_view_live_redraws_in_place() -> None:
    out = io.StringIO()
    view = ProgressView(out=out, live=True)
    view.handle(
        JobProgress(
            run_id="r",
            payload=JobProgressPayload(step=5, total_steps=10, epoch=0, fraction=0.5, eta_s=65),
        )
    )
    view.handle(
        JobProgress(
            run_id="r", payload=JobProgressPayload(step=6, total_steps=None, epoch=0, fraction=0.6)
        )
    )
    view.handle(
        MetricsEval(run_id="r", payload=MetricsEvalPayload(step=6, eval_loss=1.0, perplexity=2.72))
    )
    text = out.getvalue()
    assert text.count("\r") == 2
    assert "step 5/10" in text and "ETA 01:05" in text and "step 6 " in text
    assert "\neval @ step 6" in text


def test_describe_every_event_type() -> None:
    lines = {event.type: describe(event) for event in samples()}
    assert lines["trainer.job.failed.v1"] == "failed [TRAINING_DIVERGED]: loss became NaN at step 7"
    assert lines["trainer.job.cancelled.v1"] == "cancelled (cooperative): cancelled by owner"
    assert lines["trainer.job.completed.v1"] == "completed in 01:01: done"
    assert "123,456 params" in lines["trainer.metrics.config.v1"]
    assert lines["trainer.metrics.checkpoint.v1"] == "checkpoint @ step 100 (best): 0.0 MB"
    assert lines["trainer.metrics.completed.v1"] == "training done: 200 steps, perplexity 15.64"
    assert lines["trainer.study.started.v1"] == "trainer.study.started.v1"
    failed = samples()[4]
    assert isinstance(failed, JobFailed)
    payload = failed.payload.model_copy(update={"retrying": True})
    assert "(will retry)" in describe(failed.model_copy(update={"payload": payload}))


def test_formatting_helpers() -> None:
    assert format_duration(None) == "--:--"
    assert format_duration(59) == "00:59"
    assert format_duration(3725) == "1:02:05"
    assert render_bar(0.5, width=4) == "██··"
    assert render_bar(2.0, width=2) == "██"
