"""Pure ASGI middleware (no BaseHTTPMiddleware, so streaming responses pass through
untouched):

- `RequestIdMiddleware`: every request gets an id, the caller's `X-Request-ID` when it is sane,
  else a new one. It is echoed on the response, attached to every log line and to error bodies.
- `HeadAsGetMiddleware`: a HEAD request is answered as its GET, headers only; a stream is
  never started for it.
- `BodySizeLimitMiddleware`: a body larger than `security.max_request_bytes` is refused with
  413 PAYLOAD_TOO_LARGE, whether its Content-Length says so or it only turns out so while it
  streams in (chunked). Bodies are small JSON, so the body is read before the app runs.

(The API key's middleware is in `security.py`.) A refusal here has the body of every other
error: `{code, message, request_id}`.
"""

from __future__ import annotations

import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from platform_core.api_models import ErrorBody
from platform_core.errors import ErrorCode
from platform_core.logging import log_context

HEADER = "x-request-id"
# a plain token: anything else (long, spaces, non-ASCII) is replaced by a generated id
_SANE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_log = logging.getLogger(__name__)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        with log_context(request_id=request_id):
            await self.app(scope, receive, send_with_id)


def _incoming(scope: Scope) -> str | None:
    return _sane(header(scope, HEADER.encode()))


def _sane(text: str | None) -> str | None:
    return text if text is not None and _SANE.fullmatch(text) else None


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower case, as ASGI gives names) in `scope`."""
    for key, value in scope.get("headers", []):
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        body: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all
                return
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, send)
                return
            body.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(body), receive), send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        _log.info(
            "request body over %d bytes refused",
            self.max_bytes,
            extra={"event": "api.body_too_large", "path": str(scope.get("path", ""))},
        )
        message = f"request body larger than {self.max_bytes} bytes"
        # the rest of the body is not read, so the connection cannot carry another request
        await send_error(scope, send, ErrorCode.PAYLOAD_TOO_LARGE, message, close=True)


async def send_error(
    scope: Scope, send: Send, code: ErrorCode, message: str, *, close: bool = False
) -> None:
    """Answer from a middleware, before the app (and its exception handlers) runs, with the
    same `{code, message, request_id}` body as every other error."""
    request_id = scope.get("state", {}).get("request_id")
    error = ErrorBody(
        code=code.value,
        message=message,
        request_id=request_id if isinstance(request_id, str) else None,
    )
    payload = error.model_dump_json().encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": code.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then waits on the client (for
    its disconnect) as the original would."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


class _HeadAnswered(BaseException):
    """Raised through the app once a HEAD answer's headers are out: nothing after them is
    wanted (a BaseException, so that no exception handler logs or answers it)."""


class HeadAsGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.start":
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                raise _HeadAnswered

        try:
            await self.app({**scope, "method": "GET"}, receive, send_headers_only)
        except _HeadAnswered:
            return


def declare_head_operations(schema: dict[str, object]) -> None:
    """Adds to an OpenAPI `schema` (in place) the HEAD operation `HeadAsGetMiddleware` serves
    for every GET: the GET's parameters, statuses and headers, and no body."""
    paths = schema.get("paths")
    for operations in paths.values() if isinstance(paths, dict) else ():
        get = operations.get("get") if isinstance(operations, dict) else None
        if not isinstance(get, dict) or "head" in operations:
            continue
        head = {key: value for key, value in get.items() if key != "responses"}
        head["operationId"] = f"{get.get('operationId', 'get')}_head"
        head["summary"] = f"{get.get('summary', 'GET')} (headers only)"
        head["description"] = "The GET's status and headers, without its body."
        responses = get.get("responses")
        head["responses"] = {
            # no body: nothing for a link to read either
            status: {k: v for k, v in response.items() if k not in ("content", "links")}
            for status, response in (responses.items() if isinstance(responses, dict) else ())
            if isinstance(response, dict)
        }
        operations["head"] = head
