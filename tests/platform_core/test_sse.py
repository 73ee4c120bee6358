"""The SSE wire format: what the API writes, the client reads back, in chunks of any size."""

from __future__ import annotations

import pytest

from platform_core.events import JobProgress, JobProgressPayload, encode_event
from platform_core.http_core import ApiError, stream_messages
from platform_core.sse import KEEP_ALIVE, SseMessage, SseParser, format_sse, streamed_event


def _feed_in_pieces(parser: SseParser, stream: bytes, size: int) -> list[SseMessage]:
    messages: list[SseMessage] = []
    for start in range(0, len(stream), size):
        messages.extend(parser.feed_bytes(stream[start : start + size]))
    return messages


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_messages_survive_any_chunking(size: int) -> None:
    stream = (
        format_sse('{"a": 1}', event="log", id="10")
        + KEEP_ALIVE
        + "id: 11\r\nevent: log\r\ndata: héllo\r\ndata: world\r\n\r\n".encode()
        + b"retry: 1000\nunknown: field\ndata: carries the last id\n\n"
        + b"data: no end yet"
    )
    messages = _feed_in_pieces(SseParser(), stream, size)
    assert messages == [
        SseMessage(event="log", data='{"a": 1}', id="10"),
        SseMessage(event="log", data="héllo\nworld", id="11"),
        SseMessage(event="message", data="carries the last id", id="11"),
    ]


def test_a_blank_line_without_data_dispatches_nothing() -> None:
    parser = SseParser()
    assert parser.feed_bytes(b"event: log\n\n: comment\n\n") == []
    assert parser.feed("data") is None  # a field with no colon has an empty value
    assert parser.feed("") == SseMessage(event="message", data="", id=None)


def test_a_run_event_round_trips() -> None:
    event = JobProgress(
        run_id="r1", payload=JobProgressPayload(step=1, total_steps=2, epoch=0.0, fraction=0.5)
    )
    wire = format_sse(encode_event(event).decode(), event=event.type, id="5-0")
    (message,) = SseParser().feed_bytes(wire)
    streamed = streamed_event(message)
    assert (streamed.id, streamed.event) == ("5-0", event)


def test_an_error_message_keeps_the_resume_point_and_raises_a_typed_error() -> None:
    parser = SseParser()
    body = '{"code":"REDIS_UNAVAILABLE","message":"the event store failed","request_id":"r-1"}'
    chunk = format_sse("{}", event="log", id="42") + format_sse(body, event="error", id=None)
    assert b"id:" not in format_sse(body, event="error", id=None)
    with pytest.raises(ApiError) as failed:
        stream_messages(parser, chunk)
    assert (failed.value.status, failed.value.code, failed.value.request_id) == (
        503,
        "REDIS_UNAVAILABLE",
        "r-1",
    )
    assert parser.last_id == "42"


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        ('{"code":"FROM_A_NEWER_API","message":"m"}', 500, "FROM_A_NEWER_API"),
        ("not an error body", 500, "INTERNAL"),
    ],
)
def test_an_error_message_of_unknown_shape_is_still_an_api_error(
    data: str, status: int, code: str
) -> None:
    with pytest.raises(ApiError) as failed:
        stream_messages(SseParser(), format_sse(data, event="error", id=None))
    assert (failed.value.status, failed.value.code) == (status, code)


def test_other_messages_pass_through() -> None:
    messages = stream_messages(SseParser(), format_sse("{}", event="log", id="1"))
    assert [(m.event, m.id) for m in messages] == [("log", "1")]
