"""What both HTTP clients of the trainer API share and that is not I/O: building requests
(X-Request-ID, X-Api-Key, Idempotency-Key), deciding whether an outcome is retried, and
turning answers into pydantic models or one `ApiError`:

- an error body `{code, message, request_id}` keeps the API's code and message;
- any other non-2xx body becomes UPSTREAM_UNAVAILABLE (5xx) or INTERNAL, with a short message
  that never dumps the body (a proxy's HTML error page is not a message);
- no response at all is status 0, UPSTREAM_UNAVAILABLE, naming the base URL.

Only idempotent calls are retried (GET/HEAD/PUT/DELETE/OPTIONS, or a POST that carries an
Idempotency-Key), on connection errors, timeouts, 429, 502, 503 and 504, with exponential
backoff that waits at least what Retry-After asks (capped). A plain POST is never retried:
the server may have acted on it before the connection broke.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from typing import Final

import httpx
from pydantic import ValidationError

from platform_core.api_calls import (
    API_KEY_HEADER,
    IDEMPOTENCY_KEY_HEADER,
    REQUEST_ID_HEADER,
    ApiCall,
    ModelT,
    StreamCall,
)
from platform_core.api_models import ErrorBody
from platform_core.errors import ErrorCode
from platform_core.sse import ERROR_EVENT, SseMessage, SseParser

logger = logging.getLogger(__name__)


_IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
# a request that may not have reached the server, or whose answer was lost on the way back
_RETRY_ERRORS: Final = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
# the longest one wait may last, whatever Retry-After says: a CLI user should not stare at a
# frozen prompt for minutes; past this the caller sees the 429/503 and decides
MAX_RETRY_DELAY_S: Final = 30.0
# a live stream may be silent between events: the API sends a keep-alive comment every 15 s,
# so a minute without a byte means the connection is dead
STREAM_READ_TIMEOUT_S: Final = 60.0


class ApiError(Exception):
    """A call to the trainer API failed; `status` is 0 when no response arrived."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id

    @property
    def error_code(self) -> ErrorCode | None:
        """`code` as an ErrorCode, or None for a code this version does not know."""
        try:
            return ErrorCode(self.code)
        except ValueError:
            return None


def stream_messages(parser: SseParser, chunk: bytes) -> list[SseMessage]:
    """The messages `chunk` completes; an `error` one raises its ApiError."""
    messages = parser.feed_bytes(chunk)
    for message in messages:
        raise_if_error(message)
    return messages


def raise_if_error(message: SseMessage) -> None:
    """A stream that fails after its 200 ends with an `error` message holding an ErrorBody:
    the reader gets the same ApiError as a failed call (status from the code)."""
    if message.event != ERROR_EVENT:
        return
    try:
        body = ErrorBody.model_validate_json(message.data)
    except ValidationError:
        body = ErrorBody(code=ErrorCode.INTERNAL.value, message=message.data[:200])
    try:
        status = ErrorCode(body.code).http_status
    except ValueError:
        status = ErrorCode.INTERNAL.http_status
    raise ApiError(status, body.code, body.message, body.request_id)


@dataclass(frozen=True, slots=True)
class RetryIn:
    """The outcome is retried after `delay_s` seconds."""

    delay_s: float


def build_headers(
    api_key: str | None, idempotency_key: str | None, accept: str = "application/json"
) -> dict[str, str]:
    """Headers of one call; the request id stays the same across its retries so the API's
    logs show them as one request."""
    headers = {REQUEST_ID_HEADER: uuid.uuid4().hex, "Accept": accept}
    if api_key is not None:
        headers[API_KEY_HEADER] = api_key
    if idempotency_key is not None:
        headers[IDEMPOTENCY_KEY_HEADER] = idempotency_key
    return headers


def is_idempotent(request: httpx.Request) -> bool:
    """Sending `request` twice has the effect of sending it once."""
    return request.method in _IDEMPOTENT_METHODS or (
        request.method == "POST" and IDEMPOTENCY_KEY_HEADER in request.headers
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header; None when absent, negative or an HTTP date (we
    then rely on our own backoff)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def retry_delay_s(attempt: int, backoff_s: float, retry_after_s: float | None) -> float:
    """Wait before retry number `attempt + 1`: `backoff_s * 2**attempt`, at least what the
    server asked for, at most MAX_RETRY_DELAY_S."""
    return min(max(backoff_s * 2.0**attempt, retry_after_s or 0.0), MAX_RETRY_DELAY_S)


def parse_response(response: httpx.Response, model: type[ModelT]) -> ModelT:
    """A 2xx body as `model`; an ApiError when it is not one."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise ApiError(
            response.status_code,
            ErrorCode.INTERNAL.value,
            f"{_describe(response)} answered a body that is not a valid {model.__name__} "
            f"({exc.error_count()} problems): client and API versions disagree",
            _request_id(response),
        ) from exc


def error_from_response(response: httpx.Response) -> ApiError:
    """The ApiError for a non-2xx response, from its error body when it has one."""
    try:
        body = ErrorBody.model_validate_json(response.content)
    except ValidationError:
        server_side = response.status_code >= 500
        code = ErrorCode.UPSTREAM_UNAVAILABLE if server_side else ErrorCode.INTERNAL
        content_type = response.headers.get("Content-Type") or "no content type"
        return ApiError(
            response.status_code,
            code.value,
            f"{_describe(response)} failed with HTTP {response.status_code} and a "
            f"{content_type} body that is not an API error (a proxy or another server "
            "may be answering)",
            _request_id(response),
        )
    return ApiError(
        response.status_code, body.code, body.message, body.request_id or _request_id(response)
    )


def _describe(response: httpx.Response) -> str:
    return f"{response.request.method} {response.request.url.path}"


def _request_id(response: httpx.Response) -> str | None:
    # the API echoes our id; fall back on the one we sent if it did not
    echoed: str | None = response.headers.get(REQUEST_ID_HEADER)
    sent: str | None = response.request.headers.get(REQUEST_ID_HEADER)
    return echoed or sent


@dataclass(frozen=True, slots=True)
class ClientCore:
    """Everything both clients do that is not I/O."""

    base_url: str  # without a trailing slash; paths start with one
    api_key: str | None  # sent as X-Api-Key when set
    max_retries: int  # retries after the first attempt, for idempotent calls only
    backoff_s: float  # wait before the first retry; doubles each time
    timeout_s: float  # connect, write and (for JSON calls) read timeout

    def build(self, call: ApiCall[ModelT]) -> httpx.Request:
        headers = build_headers(self.api_key, call.idempotency_key)
        content = None
        if call.body is not None:
            headers["Content-Type"] = "application/json"
            content = call.body.model_dump_json().encode()
        return httpx.Request(
            call.method.upper(),
            self.base_url + call.path,
            headers=headers,
            params=call.params,
            content=content,
        )

    def build_stream(self, call: StreamCall) -> httpx.Request:
        headers = build_headers(self.api_key, None, call.accept)
        headers.update(call.headers or {})
        request = httpx.Request(
            "GET", self.base_url + call.path, headers=headers, params=call.params
        )
        timeout = httpx.Timeout(self.timeout_s, read=STREAM_READ_TIMEOUT_S)
        request.extensions["timeout"] = timeout.as_dict()
        return request

    def settle(
        self, request: httpx.Request, attempt: int, outcome: httpx.Response | httpx.TransportError
    ) -> httpx.Response | RetryIn:
        """The response to keep (of any status), a RetryIn, or a raised ApiError when no
        response came, for attempt `attempt` (0 = the first) that ended in `outcome`."""
        can_retry = attempt < self.max_retries and is_idempotent(request)
        if isinstance(outcome, httpx.Response):
            if can_retry and outcome.status_code in _RETRY_STATUSES:
                retry_after = parse_retry_after(outcome.headers.get("Retry-After"))
                return self._retry(request, attempt, str(outcome.status_code), retry_after)
            return outcome
        if can_retry and isinstance(outcome, _RETRY_ERRORS):
            return self._retry(request, attempt, type(outcome).__name__, None)
        raise self.unreachable(request, outcome) from outcome

    def unreachable(self, request: httpx.Request, exc: httpx.TransportError) -> ApiError:
        return ApiError(
            0,
            ErrorCode.UPSTREAM_UNAVAILABLE.value,
            f"cannot reach the trainer API at {self.base_url} "
            f"({request.method} {request.url.path}: {type(exc).__name__}: {exc})",
            request.headers.get(REQUEST_ID_HEADER),
        )

    def _retry(
        self, request: httpx.Request, attempt: int, cause: str, retry_after: float | None
    ) -> RetryIn:
        delay = retry_delay_s(attempt, self.backoff_s, retry_after)
        logger.warning(
            "%s %s got %s; retry %d/%d in %.2fs",
            request.method,
            request.url.path,
            cause,
            attempt + 1,
            self.max_retries,
            delay,
            extra={
                "event": "http_client.retry",
                "request_id": request.headers.get(REQUEST_ID_HEADER),
                "attempt": attempt + 1,
            },
        )
        return RetryIn(delay)
