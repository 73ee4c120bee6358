"""trainctl's API commands against a real API server (uvicorn), a real Redis and a real
worker (RQ's SimpleWorker in this process), as a user or a script runs them."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import pytest
import redis
from rq import Queue

from platform_core.api_models import (
    GenerateRecord,
    JobAccepted,
    RunList,
    RunLogs,
    RunPublic,
    ScoreRecord,
)
from platform_core.errors import ErrorCode, FailureClass
from platform_core.event_bus import EventBus
from platform_core.events import (
    Event,
    JobCompleted,
    JobCompletedPayload,
    JobFailed,
    JobFailedPayload,
    decode_event,
)
from platform_core.http_client import ApiError, TrainerClient
from platform_core.logging import configure_logging
from platform_core.queue import INFERENCE_QUEUE, TRAINING_QUEUE
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.settings import LogFormat
from tests.api.conftest import LiveApi, char_tokenizer, tiny_run, tiny_run_spec, work
from tests.manifests import write_run_manifest
from trainer_api import streams
from trainer_cli import follow
from trainer_cli.follow import follow_run
from trainer_cli.main import main
from trainer_cli.remote import exit_code_for
from trainer_worker import defaults

pytestmark = pytest.mark.integration
HEAVY = ("torch", "transformers", "mlflow")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


class Cli(Protocol):
    def __call__(self, *args: str) -> Result: ...


@pytest.fixture
def cli(
    live_api: LiveApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Cli]:
    """Runs `trainctl ARGS` in this process against the live API; its exit code and output."""
    monkeypatch.setenv("APP__API__BASE_URL", live_api.base_url)
    monkeypatch.setattr(streams, "FINISH_GRACE_S", 0.0)

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    with restored_logging():
        yield run


@contextmanager
def restored_logging() -> Iterator[None]:
    """trainctl sets up logging on the captured stderr, which closes with the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def while_working(
    cli: Cli,
    redis_client: redis.Redis,
    queue: str,
    *args: str,
    then: Callable[[], object] | None = None,
) -> Result:
    """Run a command that waits on the worker (follow, generate, score) in a thread, and the
    worker here: RQ's worker wants the main thread. It starts once the command has queued;
    `then`, when given, runs there instead (what a test does while the command waits)."""
    waiting = Queue(queue, connection=redis_client)
    before = waiting.count
    results: list[Result] = []
    thread = threading.Thread(target=lambda: results.append(cli(*args)))
    thread.start()
    deadline = time.monotonic() + 60
    while waiting.count == before and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    # as a worker process logs (the command set the logs to warnings), so runs log lines
    configure_logging("model-trainer-worker", level="INFO", fmt=LogFormat.TEXT)
    if then is None:
        work(redis_client, queue)
    else:
        then()
    thread.join(timeout=120)
    assert results, "the command did not finish"
    return results[0]


@pytest.fixture
def tokenizer(cli: Cli, corpus: str, redis_client: redis.Redis) -> str:
    """A trained char tokenizer, submitted with the CLI."""
    submitted = cli("submit", "tokenizer", "--kind", "char", "--corpus", corpus, "--json")
    assert submitted.code == 0, submitted.err
    accepted = JobAccepted.model_validate(submitted.json())
    assert (accepted.kind, accepted.status) == ("train_tokenizer", "queued")
    work(redis_client)
    return accepted.run_id


@pytest.mark.slow
def test_submit_follow_status_logs_generate_and_score(
    cli: Cli,
    tokenizer: str,
    corpus: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)
    # a whole request body from a file; the flags override it
    spec = tmp_path / "run.json"
    spec.write_text(tiny_run(tokenizer, corpus, "from-file").model_dump_json())
    followed = while_working(
        cli, redis_client, TRAINING_QUEUE,
        "submit", "model", "--spec", str(spec), "--id", "cli-run", "--steps", "10", "--follow",
    )  # fmt: skip
    assert followed.code == 0, followed.err
    lines = followed.out.splitlines()
    assert lines[0] == "train_model cli-run: queued"
    assert "queued on 'training'" in lines
    assert any(line.startswith("100.0% step 10/10 loss ") for line in lines)
    assert any(line.startswith("eval @ step 10: loss") for line in lines)
    assert lines[-1].startswith("completed in ")

    replayed = cli("follow", "cli-run", "--json")
    assert replayed.code == 0
    events = [decode_event(line) for line in replayed.out.splitlines()]
    assert events[0].type == "trainer.job.queued.v1" and isinstance(events[-1], JobCompleted)

    status = cli("status", "cli-run")
    assert status.code == 0
    shown = dict(line.split(maxsplit=1) for line in status.out.splitlines() if " " in line)
    assert shown["run"] == "cli-run" and shown["status"] == "completed"
    assert shown["progress"].startswith("100.0% step 10/10 loss ")
    assert shown["checkpoint"] == "step 10"  # the final save
    assert "-> final" in status.out and "steps      10 in " in status.out
    run = RunPublic.model_validate(cli("status", "cli-run", "--json").json())
    assert run.metrics is not None and run.metrics.steps == 10

    listed = cli("runs")
    assert listed.code == 0
    header, *rows, total = listed.out.splitlines()
    assert header.split() == ["RUN", "KIND", "STATUS", "PROGRESS", "MESSAGE"]
    assert [row.split()[:4] for row in rows] == [
        ["cli-run", "train_model", "completed", "100%"],
        [tokenizer, "train_tokenizer", "completed", "100%"],
    ]
    assert total == "1-2 of 2 runs"
    models = RunList.model_validate(cli("runs", "--kind", "train_model", "--json").json())
    assert [item.run_id for item in models.items] == ["cli-run"]
    assert cli("runs", "--status", "running").out.splitlines()[-1] == "none of 0 runs"

    logs = RunLogs.model_validate(cli("logs", "cli-run", "--tail", "3", "--json").json())
    assert len(logs.lines) == 3
    text = cli("logs", "cli-run", "--tail", "3").out.splitlines()
    assert [line.split(maxsplit=2)[2] for line in text] == [line.message for line in logs.lines]
    streamed = cli("logs", "cli-run", "--tail", "3", "--follow", "--json")
    assert [json.loads(line)["message"] for line in streamed.out.splitlines()] == [
        line.message for line in logs.lines
    ]
    assert cli("logs", "cli-run", "--tail", "3", "--follow").out.splitlines() == text

    greedy = ("generate", "cli-run", "The ", "--max-new-tokens", "5", "--temperature", "0")
    generated = while_working(cli, redis_client, INFERENCE_QUEUE, *greedy, "--json")
    record = GenerateRecord.model_validate(generated.json())
    assert record.result is not None and len(record.result.outputs) == 1
    output = record.result.outputs[0]
    two = while_working(cli, redis_client, INFERENCE_QUEUE, *greedy, "--num", "2")
    assert two.code == 0, two.err
    assert two.out == f"The {output}\n---\nThe {output}\n"  # greedy: the same twice

    scored = while_working(
        cli, redis_client, INFERENCE_QUEUE, "score", "cli-run", "The fun", "--json"
    )
    score = ScoreRecord.model_validate(scored.json())
    assert score.result is not None and score.result.tokens == []  # a summary by default
    detailed = while_working(
        cli, redis_client, INFERENCE_QUEUE,
        "score", "cli-run", "The fun", "--per-token", "--top-k", "2",
    )  # fmt: skip
    summary, *tokens = detailed.out.splitlines()
    assert summary.startswith(f"loss {score.result.loss:.4f} nats/token, perplexity ")
    assert summary.endswith(f"over {score.result.num_predicted} predicted tokens")
    assert len(tokens) == len("The fun") and all(" bits" in token for token in tokens)
    assert tokens[0].split()[:3] == ["0", "'T'", "-"]


def test_cancel_then_follow_and_the_error_exit_codes(
    cli: Cli, corpus: str, client: TrainerClient, redis_client: redis.Redis, live_api: LiveApi
) -> None:
    client.train_tokenizer(char_tokenizer(corpus, "tok"))
    queued = cli("submit", "model", "--tokenizer", "tok", "--family", "char_lstm", "--id", "r1")
    assert queued.code == 0 and queued.out.splitlines()[-1] == "follow it with: trainctl follow r1"
    assert cli("cancel", "r1").out == "run r1 cancelled\n"
    assert cli("status", "r1").out.splitlines() == [
        "run        r1",
        "kind       train_model",
        "status     cancelled",
        "message    cancelled before it started",
    ]
    assert cli("runs", "--kind", "train_model").out.splitlines()[1].split() == [
        "r1", "train_model", "cancelled", "-", "cancelled", "before", "it", "started",
    ]  # fmt: skip
    cancelled = cli("follow", "r1")
    assert cancelled.code == ErrorCode.CANCELLED.exit_code == 1
    assert cancelled.out.splitlines()[-1] == "cancelled (cooperative): cancelled before it started"

    again = cli("cancel", "r1")  # a finished run: 409
    assert again.code == ErrorCode.CONFLICT.exit_code == 2
    assert again.err.startswith("trainctl: CONFLICT: ") and "request id " in again.err

    client.train_model(tiny_run("tok", corpus, "r2"))
    RunStateStore(redis_client).set_status("r2", RunStatus.RUNNING)
    assert cli("cancel", "r2", "--json").json() == {"run_id": "r2", "outcome": "requested"}
    assert cli("cancel", "r2").out == "cancel requested: run r2 stops at its next step\n"
    assert cli("status", "r2").out.splitlines()[1:] == [
        "kind       train_model",
        "status     running",
    ]

    for args in (("status", "ghost"), ("follow", "ghost"), ("logs", "ghost"), ("cancel", "x")):
        missing = cli(*args)
        assert missing.code == ErrorCode.NOT_FOUND.exit_code == 3, args
        assert "NOT_FOUND" in missing.err
    generate_missing = cli("generate", "ghost", "hi")
    assert generate_missing.code == 3

    # a model run known from its manifest, and no worker on the inference queue
    model = Path(live_api.settings.data_root) / "runs" / "on-disk"
    write_run_manifest(model, json.loads(tiny_run_spec("tok", corpus).model_dump_json()))
    waited = cli("generate", "on-disk", "hi", "--wait", "0")
    assert waited.code == ErrorCode.UPSTREAM_UNAVAILABLE.exit_code == 1
    assert "is a worker running on the inference queue?" in waited.err
    # a worker takes it, but the run has no weights to load
    failed = while_working(cli, redis_client, INFERENCE_QUEUE, "generate", "on-disk", "hi")
    assert (failed.code, failed.out) == (ErrorCode.CONFLICT.exit_code, "")
    message = "trainctl: CONFLICT: run on-disk has no weights yet; try again later\n"
    assert message in failed.err  # among the worker's logs
    scored = while_working(cli, redis_client, INFERENCE_QUEUE, "score", "on-disk", "hi")
    assert (scored.code, scored.out) == (failed.code, "") and message in scored.err


def test_invalid_requests_exit_with_the_config_code_before_anything_is_sent(
    cli: Cli, tmp_path: Path, redis_client: redis.Redis
) -> None:
    not_json, not_object, bad_section = (tmp_path / name for name in ("a", "b", "c"))
    not_json.write_text("{")
    not_object.write_text("[]")
    bad_section.write_text('{"spec": 5}')
    for args, expected in (
        (("submit", "model", "--tokenizer", "t", "--preset", "huge"), "INVALID_INPUT"),
        (("submit", "model", "--tokenizer", "t", "--steps", "0"), "spec.train.max_steps"),
        (("submit", "tokenizer", "--kind", "bpe", "--vocab-size", "100"), "at least 258"),
        (("submit", "tokenizer", "--id", "no/slash"), "tokenizer_id"),
        (("submit", "tokenizer", "--spec", str(tmp_path / "missing.json")), "cannot read"),
        (("submit", "tokenizer", "--spec", str(not_json)), "cannot read"),
        (("submit", "tokenizer", "--spec", str(not_object)), "must hold a JSON object"),
        (("submit", "tokenizer", "--spec", str(bad_section), "--corpus", "c"), "spec must be"),
        (("runs", "--limit", "0"), "limit"),
        (("generate", "r", "x", "--max-new-tokens", "0"), "max_new_tokens"),
        (("score", "r", ""), "text"),
    ):
        result = cli(*args)
        assert (result.code, result.out) == (2, ""), args
        assert expected in result.err, (args, result.err)
    assert Queue(TRAINING_QUEUE, connection=redis_client).count == 0


def test_an_unreachable_api_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data_root: Path
) -> None:
    with refused_port() as port:
        monkeypatch.setenv("APP__API__BASE_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
        code = main(["runs"])
    err = capsys.readouterr().err
    assert code == ErrorCode.UPSTREAM_UNAVAILABLE.exit_code == 1
    assert f"cannot reach the trainer API at http://127.0.0.1:{port}" in err
    assert "is the API running? Start it with `python -m trainer_api`" in err


@contextmanager
def refused_port() -> Iterator[int]:
    """A local port that is bound but not listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


def test_exit_codes_of_error_codes() -> None:
    assert exit_code_for("NOT_FOUND") == 3
    assert exit_code_for("STORAGE_FULL") == 4
    assert exit_code_for("TRACKING_UNAVAILABLE") == 5
    assert exit_code_for("A_CODE_FROM_A_NEWER_API") == 1


def test_api_commands_never_load_torch(live_api: LiveApi, tmp_path: Path) -> None:
    probe = (
        "import json, sys\n"
        "from trainer_cli.main import main\n"
        "code = main(sys.argv[1:])\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
        "sys.exit(code)\n"
    )
    env = {"APP__API__BASE_URL": live_api.base_url, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", probe, "runs", "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listing, heavy = done.stdout.strip().rsplit("\n", 1)
    assert RunList.model_validate_json(listing).total == 0
    assert json.loads(heavy) == []


# ---- following: outcomes, a dropped stream, a gone API ---------------------------------------


def _publish(redis_client: redis.Redis, run_id: str, *events: Event) -> None:
    RunStateStore(redis_client).set_status(run_id, RunStatus.RUNNING)
    bus = EventBus(redis_client)
    for event in events:
        bus.publish(event)


def _failed(run_id: str, code: ErrorCode, *, retrying: bool = False) -> JobFailed:
    payload = JobFailedPayload(
        error_code=code, failure_class=FailureClass.FATAL, message="boom", retrying=retrying
    )
    return JobFailed(run_id=run_id, payload=payload)


def test_follow_exits_with_the_run_outcome(
    client: TrainerClient, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "FINISH_GRACE_S", 0.0)
    completed = JobCompleted(run_id="r", payload=JobCompletedPayload(duration_s=1.0))
    _publish(redis_client, "r", _failed("r", ErrorCode.REDIS_UNAVAILABLE, retrying=True), completed)
    seen: list[Event] = []
    assert follow_run(client, "r", seen.append) == 0
    assert [event.type for event in seen] == ["trainer.job.failed.v1", "trainer.job.completed.v1"]

    _publish(redis_client, "full", _failed("full", ErrorCode.STORAGE_FULL))
    assert follow_run(client, "full", seen.append) == 4

    # no terminal event on the bus (trimmed): the run's status decides
    store = RunStateStore(redis_client)
    for status, code in (
        (RunStatus.COMPLETED, 0),
        (RunStatus.CANCELLED, 1),
        (RunStatus.FAILED, 1),
    ):
        store.set_status(f"quiet-{status}", RunStatus.RUNNING)
        store.set_status(f"quiet-{status}", status)
        assert follow_run(client, f"quiet-{status}", seen.append) == code, status


class _FlakyEvents(httpx.BaseTransport):
    """The real network, except that event streams break: the first one after `keep` bytes,
    and with `refuse` every one after it is refused."""

    def __init__(self, keep: int, *, refuse: bool = False) -> None:
        self._network = httpx.HTTPTransport()
        self._keep = keep
        self._refuse = refuse
        self.resumed_from: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/events"):
            return self._network.handle_request(request)
        self.resumed_from.append(request.headers.get("Last-Event-ID"))
        if len(self.resumed_from) > 1 and self._refuse:
            raise httpx.ConnectError("refused", request=request)
        response = self._network.handle_request(request)
        if len(self.resumed_from) > 1:
            return response
        return httpx.Response(
            response.status_code, headers=response.headers, stream=_Cut(response, self._keep)
        )

    def close(self) -> None:
        self._network.close()


class _Cut(httpx.SyncByteStream):
    def __init__(self, response: httpx.Response, keep: int) -> None:
        self._response = response
        self._keep = keep

    def __iter__(self) -> Iterator[bytes]:
        sent = b""
        for chunk in self._response.iter_raw():
            if len(sent) + len(chunk) > self._keep:
                yield chunk[: self._keep - len(sent)]
                break
            sent += chunk
            yield chunk
        self._response.close()
        raise httpx.ReadError("connection reset")


def test_a_dropped_stream_resumes_after_the_last_event(
    live_api: LiveApi,
    client: TrainerClient,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(follow, "RECONNECT_DELAY_S", 0.0)
    progress = [_failed("r", ErrorCode.REDIS_UNAVAILABLE, retrying=True) for _ in range(4)]
    completed = JobCompleted(run_id="r", payload=JobCompletedPayload(duration_s=1.0))
    _publish(redis_client, "r", *progress, completed)
    everything = list(client.stream_events("r"))
    first_size = len(
        f"id: {everything[0].id}\nevent: x\ndata: {everything[0].event.model_dump_json()}\n\n"
    )

    flaky = _FlakyEvents(keep=first_size + 200)  # one event and a half, then a reset
    seen: list[Event] = []
    with TrainerClient(live_api.base_url, transport=flaky, backoff_s=0.0) as dropping:
        assert follow_run(dropping, "r", seen.append) == 0
    assert [event.event_id for event in seen] == [item.event.event_id for item in everything]
    assert flaky.resumed_from[0] is None and flaky.resumed_from[1] == everything[0].id

    gone = _FlakyEvents(keep=first_size + 200, refuse=True)
    with (
        TrainerClient(live_api.base_url, transport=gone, backoff_s=0.0) as refusing,
        pytest.raises(ApiError) as failed,
    ):
        follow_run(refusing, "r", seen.append)
    assert failed.value.status == 0
    # the first stream, then MAX_RECONNECTS reconnects of 1 + 3 retried attempts each
    assert len(gone.resumed_from) == 1 + follow.MAX_RECONNECTS * 4


class _RedisBlink(httpx.BaseTransport):
    """The API answers 503 REDIS_UNAVAILABLE to the first `down` event-stream requests."""

    def __init__(self, down: int) -> None:
        self._network = httpx.HTTPTransport()
        self._down = down
        self.asked = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            self.asked += 1
            if self.asked <= self._down:
                body = {"code": "REDIS_UNAVAILABLE", "message": "Redis is restarting"}
                return httpx.Response(503, json=body)
        return self._network.handle_request(request)

    def close(self) -> None:
        self._network.close()


def test_follow_waits_for_the_apis_redis_and_resumes(
    live_api: LiveApi, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(follow, "REDIS_RETRY_S", 0.0)
    completed = JobCompleted(run_id="r", payload=JobCompletedPayload(duration_s=1.0))
    _publish(redis_client, "r", completed)
    seen: list[Event] = []
    blink = _RedisBlink(down=30)  # longer than the client's own retries of a 503
    with TrainerClient(live_api.base_url, transport=blink, backoff_s=0.0) as client:
        assert follow_run(client, "r", seen.append) == 0
    assert [type(e) for e in seen] == [JobCompleted] and blink.asked > 30

    monkeypatch.setattr(follow, "REDIS_WAIT_S", 0.0)  # an outage past the wait gives up
    with (
        TrainerClient(live_api.base_url, transport=_RedisBlink(down=10**6), backoff_s=0.0) as c,
        pytest.raises(ApiError) as failed,
    ):
        follow_run(c, "r", seen.append)
    assert failed.value.code == "REDIS_UNAVAILABLE"
