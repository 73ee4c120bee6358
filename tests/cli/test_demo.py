"""trainctl's demo and progress view as a user runs them: real processes, a real Redis, a real
API, real (tiny) training."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from platform_core.api_models import TokenizerCreate
from platform_core.errors import AppError, ErrorCode
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
from platform_core.http_client import ApiError, TrainerClient
from platform_core.settings import Settings, load_settings
from platform_core.specs import TokenizerSpec
from tests.platform_core.event_samples import samples
from tests.platform_core.test_embedded_redis import process_exists
from trainer_cli import demo
from trainer_cli.main import main
from trainer_cli.progress import ProgressView, describe, format_duration, render_bar

ROOT = Path(__file__).parents[2]


def _env(data_root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP__") and k != "REDIS_URL"}
    env.update({"APP__DATA_ROOT": str(data_root), "PYTHONUNBUFFERED": "1", **extra})
    return env


def _demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer_cli", "demo", "--vocab-size", "300", *args]


def _pids(out: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"^(?:api|worker) started \(pid (\d+),", out, re.M)]


@pytest.mark.integration
@pytest.mark.slow
def test_demo_main_job_runs_end_to_end_through_the_api(data_root: Path) -> None:
    """The README's main job, small: embedded Redis, the API and a worker process, two runs
    submitted through the API and followed live over its event stream."""
    result = subprocess.run(
        _demo("--steps", "30"),
        cwd=ROOT,  # coverage of the processes is written (and combined) here
        env=_env(data_root),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    out = result.stdout
    assert re.search(r"^API ready at http://127\.0\.0\.1:\d+$", out, re.M)
    assert "completed in " in out and "bpe tokenizer, vocab 300" in out
    assert re.search(r"^100\.0% step 30/30 loss \d", out, re.M)  # the progress, as it came
    assert re.search(r"^eval perplexity: first \d+\.\d\d -> final \d+\.\d\d$", out, re.M)
    assert "sample: 'The '" in out
    runs = list((data_root / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "manifest.json").is_file()
    assert "uvicorn" in (data_root / "logs" / "demo-api.log").read_text()
    # the API and the worker were stopped, and the embedded Redis with the last of them
    pids = _pids(out)
    assert len(pids) == 2 and not any(map(process_exists, pids))
    assert not (data_root / "redis" / "redis.json").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_ctrl_c_cancels_the_run_and_leaves_workers_it_did_not_start(data_root: Path) -> None:
    """`--no-worker` uses a worker that already runs (sharing the data root's embedded Redis);
    a Ctrl-C cancels the run under way (the worker stops it at a step) and stops the API."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "trainer_cli", "worker"],
        cwd=ROOT,
        env=_env(data_root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        demo = subprocess.Popen(
            _demo("--steps", "5000", "--no-worker"),
            cwd=ROOT,
            env=_env(data_root),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert demo.stdout is not None
        seen: list[str] = []
        for line in demo.stdout:  # until the model run has started training
            seen.append(line)
            if line.startswith("eval @ step 0"):
                break
        demo.send_signal(signal.SIGINT)
        rest, err = demo.communicate(timeout=180)
        out = "".join(seen) + rest
        assert demo.returncode == 130, err[-3000:]
        run_id = re.findall(r"^== model (\S+):", out, re.M)[0]
        assert f"run {run_id}: cancelled" in err and "trainctl: interrupted" in err
        manifest = data_root / "runs" / run_id / "manifest.json"
        status = "running"
        for _ in range(600):  # the worker stops the run at its next step
            if manifest.is_file():
                status = json.loads(manifest.read_text())["status"]
            if status != "running":
                break
            time.sleep(0.05)
        assert status == "cancelled"
        (api,) = _pids(out)
        assert not process_exists(api) and worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    assert not (data_root / "redis" / "redis.json").exists()


def test_the_demo_checks_its_settings_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data_root: Path
) -> None:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    assert main(["demo", "--vocab-size", "100"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainctl: INVALID_INPUT: invalid demo arguments: ")
    assert "vocab_size must be at least 258" in err
    assert main(["demo", "--preset", "huge"]) == 2
    assert "unknown gpt2 preset 'huge'" in capsys.readouterr().err
    assert main(["demo", "--steps", "0"]) == 2
    assert "max_steps: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert not (data_root / "logs").exists()  # no process was started


@pytest.fixture
def demo_settings(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> Settings:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    return load_settings()


def _python(settings: Settings, name: str, code: str) -> demo.Child:
    return demo.spawn(settings, name, ["-c", code], {})


@pytest.mark.integration
def test_a_process_that_dies_ends_the_wait_and_cancels_the_run(
    demo_settings: Settings, client: TrainerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "WATCH_INTERVAL_S", 0.05)
    api = _python(demo_settings, "api", "import time; time.sleep(60)")
    dying = _python(demo_settings, "worker", "import time; time.sleep(0.5); raise SystemExit(3)")
    tokenizer = TokenizerCreate(spec=TokenizerSpec(kind="char"))
    try:
        with pytest.raises(AppError) as ended:  # nothing works the queue: only the check ends it
            demo.submit_and_follow(
                client,
                lambda key: client.train_tokenizer(tokenizer, idempotency_key=key),
                [api, dying],
            )
    finally:
        demo.stop(api, grace_s=5)
    assert ended.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert "the worker process exited with 3 before run tok-" in ended.value.message
    assert str(dying.log) in ended.value.message
    (run,) = client.list_runs().items
    assert run.status == "cancelled"
    demo.cancel_quietly(client, run.run_id)  # a finished run: nothing to do, no error
    with pytest.raises(ApiError) as unknown:  # what ends the following thread is raised here
        demo.follow_while_alive(client, "ghost", [])
    assert unknown.value.error_code is ErrorCode.NOT_FOUND


@pytest.mark.integration
def test_waiting_for_the_api_ends_when_it_exits_or_takes_too_long(
    demo_settings: Settings,
) -> None:
    url = "http://127.0.0.1:9"  # nothing listens there
    exited = _python(demo_settings, "api", "raise SystemExit(4)")
    with pytest.raises(AppError, match="exited with 4 before it was ready"):
        demo.wait_until_ready(url, exited, timeout_s=30)
    slow = _python(demo_settings, "api", "import time; time.sleep(30)")
    try:
        with pytest.raises(AppError, match=r"not ready within 0\.2 s; see .*demo-api\.log"):
            demo.wait_until_ready(url, slow, timeout_s=0.2)
    finally:
        demo.stop(slow, grace_s=5)
    assert slow.process.returncode == -signal.SIGTERM


@pytest.mark.integration
def test_a_process_that_ignores_sigterm_is_killed(
    demo_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "FORCED_STOP_S", 0.1)
    stubborn = _python(
        demo_settings,
        "worker",
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring', flush=True)\n"
        "time.sleep(60)\n",
    )
    while "ignoring" not in stubborn.log.read_text():
        time.sleep(0.02)
    demo.stop(stubborn, grace_s=0.1)
    assert stubborn.process.returncode == -signal.SIGKILL
    err = capsys.readouterr().err
    assert "the worker did not stop within 0.1 s" in err
    demo.stop(stubborn, grace_s=0.1)  # already stopped: nothing to do


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
