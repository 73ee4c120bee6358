"""A run's logs through the API: the parsed tail, and the live SSE stream that follows the
file, resumes at a byte offset and ends with the run."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from platform_core.errors import ErrorCode
from platform_core.http_client import ApiError, TrainerClient
from platform_core.run_state import RunStateStore, RunStatus
from tests.api.conftest import LiveApi
from trainer_api import log_files, streams
from trainer_api.log_files import line_start, tail_offset

pytestmark = pytest.mark.integration


def _record(step: int) -> str:
    return json.dumps(
        {
            "timestamp": f"2026-01-01T00:00:{step:02d}+00:00",
            "level": "INFO",
            "logger": "trainer_worker.training.loop",
            "message": f"step {step}",
            "run_id": "run-l",
            "step": step,
            "loss": 1.0 / (step + 1),
            "event": "training.step",
        }
    )


@pytest.fixture
def log_file(redis_client: redis.Redis, data_root: Path) -> Path:
    RunStateStore(redis_client).set_status("run-l", RunStatus.RUNNING)
    folder = data_root / "runs" / "run-l"
    folder.mkdir(parents=True)
    path = folder / "logs.jsonl"
    lines = [_record(step) for step in range(5)] + ["not json at all", "[1, 2]"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_tail_parses_the_last_lines(client: TrainerClient, log_file: Path) -> None:
    logs = client.run_logs("run-l", tail=4)
    assert logs.run_id == "run-l"
    assert [line.message for line in logs.lines] == [
        "step 3",
        "step 4",
        "not json at all",
        "[1, 2]",
    ]
    first = logs.lines[0]
    assert (first.level, first.step, first.loss, first.event) == ("INFO", 3, 0.25, "training.step")
    assert first.timestamp == "2026-01-01T00:00:03+00:00" and first.logger is not None
    assert logs.lines[2].level is None

    assert len(client.run_logs("run-l", tail=1000).lines) == 7


def test_tail_of_a_run_without_logs_is_empty_and_unknown_runs_are_404(
    client: TrainerClient, redis_client: redis.Redis
) -> None:
    RunStateStore(redis_client).set_status("quiet", RunStatus.QUEUED)
    assert client.run_logs("quiet").lines == []
    with pytest.raises(ApiError) as unknown:
        client.run_logs("ghost")
    assert (unknown.value.status, unknown.value.error_code) == (404, ErrorCode.NOT_FOUND)
    with pytest.raises(ApiError) as too_many:
        client.run_logs("quiet", tail=5000)
    assert too_many.value.status == 422


def test_tail_offset_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_files, "_BLOCK", 7)  # lines straddle the backward reads
    path = tmp_path / "logs.jsonl"
    path.write_bytes(b"alpha\nbeta\ngamma\ndelta\nepsil")  # the last line is being written
    assert tail_offset(path, 2) == len(b"alpha\nbeta\n")
    assert tail_offset(path, 4) == 0
    assert tail_offset(path, 9) == 0
    assert tail_offset(path, 0) == len(b"alpha\nbeta\ngamma\ndelta\n")
    assert tail_offset(tmp_path / "missing", 3) == 0


def test_the_stream_follows_new_lines_and_ends_with_the_run(
    client: TrainerClient,
    redis_client: redis.Redis,
    log_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streams, "LOG_POLL_S", 0.02)
    monkeypatch.setattr(streams, "FINISH_GRACE_S", 0.1)

    def write_then_finish() -> None:
        with log_file.open("a", encoding="utf-8") as handle:
            for step in (5, 6):
                time.sleep(0.1)
                handle.write(_record(step)[:20])  # a line arrives in pieces
                handle.flush()
                time.sleep(0.05)
                handle.write(_record(step)[20:] + "\n")
                handle.flush()
        time.sleep(0.1)
        RunStateStore(redis_client).set_status("run-l", RunStatus.COMPLETED)

    writer = threading.Thread(target=write_then_finish)
    messages: list[str] = []
    for line in client.stream_logs("run-l", tail=1):
        messages.append(line.message)
        if len(messages) == 1:  # the tail arrived: now the run writes on
            writer.start()
    writer.join()
    assert messages == ["[1, 2]", "step 5", "step 6"]


def test_the_stream_resumes_after_a_byte_offset(
    live_api: LiveApi, redis_client: redis.Redis, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "FINISH_GRACE_S", 0.0)
    RunStateStore(redis_client).set_status("run-l", RunStatus.COMPLETED)
    url = f"{live_api.base_url}/runs/run-l/logs/stream"
    with httpx.stream("GET", url, params={"tail": 2}) as response:
        body = response.read().decode()
    ids = [line.removeprefix("id: ") for line in body.splitlines() if line.startswith("id: ")]
    assert [int(i) for i in ids] == [
        len("\n".join(_record(s) for s in range(5)) + "\nnot json at all\n"),
        log_file.stat().st_size,
    ]
    with httpx.stream("GET", url, headers={"Last-Event-ID": ids[0]}) as response:
        resumed = response.read().decode()
    assert resumed.count("event: log") == 1 and '"message":"[1, 2]"' in resumed


def test_the_stream_of_an_unknown_run_is_404(client: TrainerClient) -> None:
    with pytest.raises(ApiError) as unknown:
        list(client.stream_logs("ghost"))
    assert unknown.value.status == 404


def test_line_start_lands_on_a_line_boundary_never_past_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_files, "_BLOCK", 4)  # the backward search crosses blocks
    path = tmp_path / "logs.jsonl"
    path.write_bytes(b"alpha\nbeta\ngamma-long-line\nparti")  # the last line is being written
    after_beta = len(b"alpha\nbeta\n")
    assert line_start(path, after_beta) == after_beta  # a boundary stays
    assert line_start(path, after_beta + 7) == after_beta  # inside gamma: back to its start
    assert line_start(path, 3) == 0
    assert line_start(path, 2**44) == len(b"alpha\nbeta\ngamma-long-line\n")  # past the end
    assert line_start(path, 0) == 0
    assert line_start(tmp_path / "missing", 10) == 0


def test_a_resume_point_past_the_end_waits_for_new_lines(
    live_api: LiveApi, redis_client: redis.Redis, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """17592186044000 made the seek fail after the 200: the connection dropped."""
    monkeypatch.setattr(streams, "LOG_POLL_S", 0.02)
    monkeypatch.setattr(streams, "FINISH_GRACE_S", 0.3)

    def write_then_finish() -> None:
        time.sleep(0.1)
        with log_file.open("a", encoding="utf-8") as handle:
            handle.write(_record(7) + "\n")
        time.sleep(0.1)
        RunStateStore(redis_client).set_status("run-l", RunStatus.COMPLETED)

    writer = threading.Thread(target=write_then_finish)
    url = f"{live_api.base_url}/runs/run-l/logs/stream"
    with httpx.stream("GET", url, headers={"Last-Event-ID": "17592186044000"}) as response:
        writer.start()  # the headers are out: the stream's start is fixed
        body = response.read().decode()
    writer.join()
    assert response.status_code == 200
    assert body.count("event: log") == 1 and '"message":"step 7"' in body
    assert "event: error" not in body


def test_a_resume_point_inside_a_line_resends_that_whole_line(
    live_api: LiveApi, redis_client: redis.Redis, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "FINISH_GRACE_S", 0.0)
    RunStateStore(redis_client).set_status("run-l", RunStatus.COMPLETED)
    inside = len("\n".join(_record(s) for s in range(5)) + "\nnot json")
    url = f"{live_api.base_url}/runs/run-l/logs/stream"
    with httpx.stream("GET", url, headers={"Last-Event-ID": str(inside)}) as response:
        body = response.read().decode()
    data = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert [d["message"] for d in data] == ["not json at all", "[1, 2]"]


def test_a_failure_inside_the_stream_ends_it_with_a_typed_error(
    client: TrainerClient, live_api: LiveApi, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Path, offset: int) -> object:
        raise OSError("disk went away")

    monkeypatch.setattr(streams, "read_lines", broken)
    url = f"{live_api.base_url}/runs/run-l/logs/stream"
    with httpx.stream("GET", url, headers={"X-Request-ID": "req-42"}) as response:
        body = response.read().decode()
    assert response.status_code == 200
    event, data = body.strip().splitlines()[-2:]
    assert event == "event: error"
    assert json.loads(data.removeprefix("data: ")) == {
        "code": "INTERNAL",
        "message": "the stream failed (OSError)",
        "request_id": "req-42",
    }
    with pytest.raises(ApiError) as failed:
        list(client.stream_logs("run-l"))
    assert (failed.value.status, failed.value.error_code) == (500, ErrorCode.INTERNAL)
    assert failed.value.request_id is not None


def test_a_log_file_that_is_a_link_is_not_served(
    client: TrainerClient,
    live_api: LiveApi,
    redis_client: redis.Redis,
    log_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n", encoding="utf-8")
    log_file.unlink()
    log_file.symlink_to(secret)
    assert client.run_logs("run-l").lines == []
    monkeypatch.setattr(streams, "FINISH_GRACE_S", 0.0)
    RunStateStore(redis_client).set_status("run-l", RunStatus.COMPLETED)
    url = f"{live_api.base_url}/runs/run-l/logs/stream"
    with httpx.stream("GET", url, params={"tail": 5}) as response:
        assert b"root:x" not in response.read()
