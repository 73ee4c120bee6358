"""The clients' streamed endpoints (SSE events and logs, tar.gz downloads) against the
scripted server: what they send, what they skip, and every way a stream can fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from platform_core.errors import ErrorCode
from platform_core.events import JobProgress, JobProgressPayload, encode_event
from platform_core.http_client import ApiError, AsyncTrainerClient, TrainerClient
from platform_core.sse import KEEP_ALIVE, format_sse
from tests.platform_core.scripted_server import Reply, ScriptedServer, error_body

pytestmark = pytest.mark.integration

EVENT = JobProgress(
    run_id="r/1", payload=JobProgressPayload(step=1, total_steps=2, epoch=0.0, fraction=0.5)
)
EVENTS = (
    format_sse(encode_event(EVENT).decode(), event=EVENT.type, id="1-0")
    + KEEP_ALIVE
    + format_sse('{"type": "trainer.job.teleported.v9"}', event="x", id="2-0")  # a newer kind
)
LOGS = format_sse('{"message": "hi", "level": "INFO"}', event="log", id="9") + format_sse(
    '{"message": 42}', event="log", id="10"
)
SSE = {"Content-Type": "text/event-stream"}


def test_events_are_streamed_and_unknown_ones_skipped(server: ScriptedServer) -> None:
    server.script(Reply(body=EVENTS, headers=SSE))
    with TrainerClient(server.base_url, api_key="k") as client:
        streamed = list(client.stream_events("r/1", last_event_id="0-5"))
    assert [(s.id, s.event) for s in streamed] == [("1-0", EVENT)]
    seen = server.seen[0]
    assert seen.path == "/runs/r%2F1/events"
    assert seen.headers["last-event-id"] == "0-5"
    assert seen.headers["accept"] == "text/event-stream"
    assert seen.headers["x-api-key"] == "k"


def test_log_lines_are_streamed_and_unparsable_ones_skipped(server: ScriptedServer) -> None:
    server.script(Reply(body=LOGS, headers=SSE))
    with TrainerClient(server.base_url) as client:
        lines = list(client.stream_logs("r1", tail=3))
    assert [(line.message, line.level) for line in lines] == [("hi", "INFO")]
    assert server.seen[0].path == "/runs/r1/logs/stream?tail=3"


def test_a_stream_refused_by_the_api_is_an_api_error(server: ScriptedServer) -> None:
    server.script(Reply(404, error_body("NOT_FOUND", "run r1 does not exist")))
    with TrainerClient(server.base_url) as client, pytest.raises(ApiError) as raised:
        list(client.stream_events("r1"))
    assert (raised.value.status, raised.value.error_code) == (404, ErrorCode.NOT_FOUND)
    assert raised.value.message == "run r1 does not exist"


def test_a_stream_is_retried_when_the_api_is_busy(server: ScriptedServer) -> None:
    busy = Reply(503, error_body("UPSTREAM_UNAVAILABLE", "busy"))
    server.script(busy, Reply(body=EVENTS, headers=SSE))
    with TrainerClient(server.base_url, backoff_s=0.0) as client:
        assert len(list(client.stream_events("r1"))) == 1
    assert len(server.seen) == 2


def test_a_broken_stream_is_an_api_error(server: ScriptedServer) -> None:
    server.script(Reply(body=EVENTS, headers=SSE, cut_after=40))
    with TrainerClient(server.base_url) as client, pytest.raises(ApiError) as raised:
        list(client.stream_events("r1"))
    assert (raised.value.status, raised.value.error_code) == (0, ErrorCode.UPSTREAM_UNAVAILABLE)


def test_a_broken_download_leaves_nothing_behind(server: ScriptedServer, tmp_path: Path) -> None:
    server.script(Reply(body=b"\x1f\x8b" + bytes(5000), cut_after=100))
    dest = tmp_path / "run.tar.gz"
    with TrainerClient(server.base_url) as client, pytest.raises(ApiError):
        client.download_artifact("runs", "r1", dest)
    assert list(tmp_path.iterdir()) == []
    assert server.seen[0].headers["accept"] == "application/gzip"


@pytest.mark.anyio
async def test_async_streams(server: ScriptedServer, tmp_path: Path) -> None:
    busy = Reply(503, error_body("UPSTREAM_UNAVAILABLE", "busy"))
    server.script(
        busy,
        Reply(body=EVENTS, headers=SSE),
        Reply(body=LOGS, headers=SSE),
        Reply(410, error_body("GONE", "no longer here")),
        Reply(body=EVENTS, headers=SSE, cut_after=40),
        Reply(body=b"x" * 3000, cut_after=10),
    )
    async with AsyncTrainerClient(server.base_url, backoff_s=0.0) as client:
        events = [s async for s in client.stream_events("r1", last_event_id="0-1")]
        lines = [line async for line in client.stream_logs("r1")]
        with pytest.raises(ApiError) as refused:
            [s async for s in client.stream_events("r1")]
        with pytest.raises(ApiError) as broken:
            [s async for s in client.stream_events("r1")]
        with pytest.raises(ApiError):
            await client.download_artifact("tokenizers", "t1", tmp_path / "t.tar.gz")
    assert [s.event for s in events] == [EVENT]
    assert [line.message for line in lines] == ["hi"]
    assert (refused.value.status, refused.value.code) == (410, "GONE")
    assert broken.value.status == 0
    assert list(tmp_path.iterdir()) == []
