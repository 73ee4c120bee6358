"""Server-sent events on the wire: the API writes them with `format_sse`, the client reads
them with `SseParser`, one line at a time.

A message is `id:`, `event:` and `data:` lines ended by a blank line; a line starting with
`:` is a comment (the API's keep-alive). `id` is what a reconnecting reader sends back as
`Last-Event-ID`: a Redis stream id for run events, a byte offset for log lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from platform_core.events import Event, decode_event

KEEP_ALIVE: bytes = b": keep-alive\n\n"


@dataclass(frozen=True, slots=True)
class SseMessage:
    event: str  # "message" when the server named none
    data: str  # the data lines joined with "\n"
    id: str | None  # the last id seen on the stream so far (ids carry over per the spec)


@dataclass(frozen=True, slots=True)
class StreamedEvent:
    """One run event from GET /runs/{id}/events; `id` resumes the stream after it."""

    id: str
    event: Event


ERROR_EVENT = "error"  # a stream's last message when it fails after its headers: an ErrorBody


def format_sse(data: str, *, event: str, id: str | None) -> bytes:
    """One message; `data` must be a single line (compact JSON is). Without `id`, the
    reader's last id stays what it was (an error message must not move a resume point)."""
    head = f"id: {id}\n" if id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


@dataclass
class SseParser:
    """Reads a stream as it arrives, in chunks of any size, and returns each completed
    message."""

    last_id: str | None = None
    _pending: bytes = b""  # the start of a line whose end has not arrived yet
    _event: str = ""
    _data: list[str] = field(default_factory=list)

    def feed_bytes(self, chunk: bytes) -> list[SseMessage]:
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        text = (line.removesuffix(b"\r").decode("utf-8", errors="replace") for line in lines)
        messages = (self.feed(line) for line in text)
        return [message for message in messages if message is not None]

    def feed(self, line: str) -> SseMessage | None:
        """One line, without its line ending."""
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self.last_id = value
        return None  # "retry" and unknown fields are ignored, as the spec says

    def _dispatch(self) -> SseMessage | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseMessage(event=event or "message", data="\n".join(data), id=self.last_id)


def streamed_event(message: SseMessage) -> StreamedEvent:
    """A run event from its SSE message (EventDecodeError when the data is not an event)."""
    return StreamedEvent(id=message.id or "", event=decode_event(message.data))
