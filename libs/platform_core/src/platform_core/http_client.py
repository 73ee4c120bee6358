"""Typed HTTP client for the trainer API: `TrainerClient` (sync) and `AsyncTrainerClient`,
one method per endpoint, both built on `http_core.ClientCore` (requests, retry rules, errors)
and `api_calls` (what each endpoint sends), so the two only send bytes and sleep.

Streamed endpoints are iterators: `stream_events` yields each run event with its stream id
(pass the last one back as `last_event_id` to resume), `stream_logs` yields log lines, and
`download_artifact` writes a tar.gz. Every failure is one `ApiError`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Self

import anyio
import httpx

from platform_core import api_calls as calls
from platform_core.api_calls import (
    API_KEY_HEADER,
    IDEMPOTENCY_KEY_HEADER,
    REQUEST_ID_HEADER,
    ApiCall,
    ModelT,
    StreamCall,
    events_of,
    log_lines_of,
)
from platform_core.api_models import (
    ArtifactKind,
    CancelResult,
    GenerateRecord,
    HealthStatus,
    InferenceAccepted,
    JobAccepted,
    LogLine,
    PredictRecord,
    ReadyStatus,
    RunCreate,
    RunEval,
    RunList,
    RunLogs,
    RunPublic,
    RunQuery,
    ScoreRecord,
    TokenizerCreate,
    TokenizerList,
    TokenizerPublic,
)
from platform_core.http_core import (
    MAX_RETRY_DELAY_S,
    STREAM_READ_TIMEOUT_S,
    ApiError,
    ClientCore,
    RetryIn,
    build_headers,
    error_from_response,
    is_idempotent,
    parse_response,
    parse_retry_after,
    retry_delay_s,
    stream_messages,
)
from platform_core.specs import GenerateRequest, PredictRequest, ScoreRequest
from platform_core.sse import SseParser, StreamedEvent

__all__ = [
    "API_KEY_HEADER",
    "IDEMPOTENCY_KEY_HEADER",
    "MAX_RETRY_DELAY_S",
    "REQUEST_ID_HEADER",
    "STREAM_READ_TIMEOUT_S",
    "ApiCall",
    "ApiError",
    "AsyncTrainerClient",
    "RetryIn",
    "StreamCall",
    "StreamedEvent",
    "TrainerClient",
    "build_headers",
    "error_from_response",
    "is_idempotent",
    "parse_retry_after",
    "retry_delay_s",
]


def _partial(dest: Path) -> Path:
    # written beside dest and renamed when complete: a broken download never looks whole
    return dest.with_name(dest.name + ".part")


class TrainerClient:
    """Blocking client; use as a context manager or call `close()`. One method per endpoint;
    every failure is an ApiError."""

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,  # tests and proxies plug in here
        api_key: str | None = None,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_s: float = 0.2,
    ) -> None:
        self._http = httpx.Client(timeout=timeout_s, transport=transport)
        self._core = ClientCore(base_url.rstrip("/"), api_key, max_retries, backoff_s, timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, call: ApiCall[ModelT]) -> ModelT:
        """Send `call`, retrying what may be retried; its parsed answer, or ApiError."""
        return parse_response(self._send(self._core.build(call), stream=False), call.model)

    def _send(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        attempt = 0
        while True:
            try:
                outcome: httpx.Response | httpx.TransportError = self._http.send(
                    request, stream=stream
                )
            except httpx.TransportError as exc:
                outcome = exc
            result = self._core.settle(request, attempt, outcome)
            if isinstance(result, httpx.Response):
                if not result.is_success:
                    result.read()  # a streamed error body is small
                    result.close()
                    raise error_from_response(result)
                return result
            if isinstance(outcome, httpx.Response):
                outcome.close()
            time.sleep(result.delay_s)
            attempt += 1

    def _stream(self, call: StreamCall) -> Iterator[bytes]:
        request = self._core.build_stream(call)
        response = self._send(request, stream=True)
        try:
            yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise self._core.unreachable(request, exc) from exc
        finally:
            response.close()

    def healthz(self) -> HealthStatus:
        return self.call(calls.HEALTHZ)

    def readyz(self) -> ReadyStatus:
        return self.call(calls.READYZ)

    def train_tokenizer(
        self, body: TokenizerCreate, *, idempotency_key: str | None = None
    ) -> JobAccepted:
        """Queue a tokenizer training; with `idempotency_key` a retry never queues two."""
        return self.call(calls.train_tokenizer(body, idempotency_key))

    def list_tokenizers(self) -> TokenizerList:
        return self.call(calls.LIST_TOKENIZERS)

    def get_tokenizer(self, tokenizer_id: str) -> TokenizerPublic:
        return self.call(calls.get_tokenizer(tokenizer_id))

    def train_model(self, body: RunCreate, *, idempotency_key: str | None = None) -> JobAccepted:
        """Queue a model run; with `idempotency_key` a retry never queues two."""
        return self.call(calls.train_model(body, idempotency_key))

    def list_runs(self, query: RunQuery | None = None) -> RunList:
        """Runs newest first; all of them, 20 at a time, without a query."""
        return self.call(calls.list_runs(query))

    def get_run(self, run_id: str) -> RunPublic:
        return self.call(calls.get_run(run_id))

    def cancel_run(self, run_id: str) -> CancelResult:
        return self.call(calls.cancel_run(run_id))

    def run_logs(self, run_id: str, *, tail: int = 100) -> RunLogs:
        return self.call(calls.run_logs(run_id, tail=tail))

    def evaluate(self, run_id: str, *, idempotency_key: str | None = None) -> InferenceAccepted:
        return self.call(calls.evaluate(run_id, idempotency_key=idempotency_key))

    def get_eval(self, run_id: str, *, request_id: str | None = None) -> RunEval:
        return self.call(calls.get_eval(run_id, request_id=request_id))

    def generate(
        self, run_id: str, request: GenerateRequest, *, idempotency_key: str | None = None
    ) -> InferenceAccepted:
        return self.call(calls.generate(run_id, request, idempotency_key=idempotency_key))

    def get_generate(self, run_id: str, request_id: str) -> GenerateRecord:
        return self.call(calls.get_generate(run_id, request_id))

    def score(
        self, run_id: str, request: ScoreRequest, *, idempotency_key: str | None = None
    ) -> InferenceAccepted:
        return self.call(calls.score(run_id, request, idempotency_key=idempotency_key))

    def get_score(self, run_id: str, request_id: str) -> ScoreRecord:
        return self.call(calls.get_score(run_id, request_id))

    def predict(
        self, run_id: str, request: PredictRequest, *, idempotency_key: str | None = None
    ) -> InferenceAccepted:
        return self.call(calls.predict(run_id, request, idempotency_key=idempotency_key))

    def get_predict(self, run_id: str, request_id: str) -> PredictRecord:
        return self.call(calls.get_predict(run_id, request_id))

    def stream_events(
        self, run_id: str, last_event_id: str | None = None
    ) -> Iterator[StreamedEvent]:
        """The run's events as they happen, from its start or after `last_event_id`; ends
        after its terminal event. Reconnect with the last `.id` seen to resume."""
        parser = SseParser()
        for chunk in self._stream(calls.run_events(run_id, last_event_id)):
            yield from events_of(stream_messages(parser, chunk))

    def stream_logs(self, run_id: str, *, tail: int = 100) -> Iterator[LogLine]:
        """The last `tail` log lines, then new ones as they are written; ends with the run."""
        parser = SseParser()
        for chunk in self._stream(calls.log_stream(run_id, tail=tail)):
            yield from log_lines_of(stream_messages(parser, chunk))

    def read_bytes(self, call: StreamCall) -> bytes:
        """The whole body of a small file endpoint (a chart, a study's plot)."""
        return b"".join(self._stream(call))

    def run_chart(self, run_id: str) -> bytes:
        """The run's chart (PNG) from its whole metric history."""
        return self.read_bytes(calls.run_chart(run_id))

    def download_artifact(self, kind: ArtifactKind, artifact_id: str, dest: Path) -> Path:
        """Save the tar.gz of a tokenizer or run folder as `dest`."""
        part = _partial(dest)
        try:
            with part.open("wb") as out:
                for chunk in self._stream(calls.artifact(kind, artifact_id)):
                    out.write(chunk)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return part.replace(dest)


class AsyncTrainerClient:
    """The async twin of TrainerClient (asyncio or trio); `async with` or `await aclose()`.
    Close a stream you leave early with `contextlib.aclosing`."""

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,  # tests and proxies plug in here
        api_key: str | None = None,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_s: float = 0.2,
    ) -> None:
        self._http = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self._core = ClientCore(base_url.rstrip("/"), api_key, max_retries, backoff_s, timeout_s)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, call: ApiCall[ModelT]) -> ModelT:
        """Send `call`, retrying what may be retried; its parsed answer, or ApiError."""
        return parse_response(await self._send(self._core.build(call), stream=False), call.model)

    async def _send(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        attempt = 0
        while True:
            try:
                outcome: httpx.Response | httpx.TransportError = await self._http.send(
                    request, stream=stream
                )
            except httpx.TransportError as exc:
                outcome = exc
            result = self._core.settle(request, attempt, outcome)
            if isinstance(result, httpx.Response):
                if not result.is_success:
                    await result.aread()
                    await result.aclose()
                    raise error_from_response(result)
                return result
            if isinstance(outcome, httpx.Response):
                await outcome.aclose()
            await anyio.sleep(result.delay_s)
            attempt += 1

    async def _stream(self, call: StreamCall) -> AsyncGenerator[bytes]:
        request = self._core.build_stream(call)
        response = await self._send(request, stream=True)
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        except httpx.TransportError as exc:
            raise self._core.unreachable(request, exc) from exc
        finally:
            await response.aclose()

    async def healthz(self) -> HealthStatus:
        return await self.call(calls.HEALTHZ)

    async def readyz(self) -> ReadyStatus:
        return await self.call(calls.READYZ)

    async def train_tokenizer(
        self, body: TokenizerCreate, *, idempotency_key: str | None = None
    ) -> JobAccepted:
        return await self.call(calls.train_tokenizer(body, idempotency_key))

    async def list_tokenizers(self) -> TokenizerList:
        return await self.call(calls.LIST_TOKENIZERS)

    async def get_tokenizer(self, tokenizer_id: str) -> TokenizerPublic:
        return await self.call(calls.get_tokenizer(tokenizer_id))

    async def train_model(
        self, body: RunCreate, *, idempotency_key: str | None = None
    ) -> JobAccepted:
        return await self.call(calls.train_model(body, idempotency_key))

    async def list_runs(self, query: RunQuery | None = None) -> RunList:
        return await self.call(calls.list_runs(query))

    async def get_run(self, run_id: str) -> RunPublic:
        return await self.call(calls.get_run(run_id))

    async def cancel_run(self, run_id: str) -> CancelResult:
        return await self.call(calls.cancel_run(run_id))

    async def run_logs(self, run_id: str, *, tail: int = 100) -> RunLogs:
        return await self.call(calls.run_logs(run_id, tail=tail))

    async def evaluate(
        self, run_id: str, *, idempotency_key: str | None = None
    ) -> InferenceAccepted:
        return await self.call(calls.evaluate(run_id, idempotency_key=idempotency_key))

    async def get_eval(self, run_id: str, *, request_id: str | None = None) -> RunEval:
        return await self.call(calls.get_eval(run_id, request_id=request_id))

    async def generate(
        self, run_id: str, request: GenerateRequest, *, idempotency_key: str | None = None
    ) -> InferenceAccepted:
        return await self.call(calls.generate(run_id, request, idempotency_key=idempotency_key))

    async def get_generate(self, run_id: str, request_id: str) -> GenerateRecord:
        return await self.call(calls.get_generate(run_id, request_id))

    async def score(
        self, run_id: str, request: ScoreRequest, *, idempotency_key: str | None = None
    ) -> InferenceAccepted:
        return await self.call(calls.score(run_id, request, idempotency_key=idempotency_key))

    async def get_score(self, run_id: str, request_id: str) -> ScoreRecord:
        return await self.call(calls.get_score(run_id, request_id))

    async def predict(
        self, run_id: str, request: PredictRequest, *, idempotency_key: str | None = None
    ) -> InferenceAccepted:
        return await self.call(calls.predict(run_id, request, idempotency_key=idempotency_key))

    async def get_predict(self, run_id: str, request_id: str) -> PredictRecord:
        return await self.call(calls.get_predict(run_id, request_id))

    async def stream_events(
        self, run_id: str, last_event_id: str | None = None
    ) -> AsyncGenerator[StreamedEvent]:
        parser = SseParser()
        async with aclosing(self._stream(calls.run_events(run_id, last_event_id))) as chunks:
            async for chunk in chunks:
                for event in events_of(stream_messages(parser, chunk)):
                    yield event

    async def stream_logs(self, run_id: str, *, tail: int = 100) -> AsyncGenerator[LogLine]:
        parser = SseParser()
        async with aclosing(self._stream(calls.log_stream(run_id, tail=tail))) as chunks:
            async for chunk in chunks:
                for line in log_lines_of(stream_messages(parser, chunk)):
                    yield line

    async def read_bytes(self, call: StreamCall) -> bytes:
        """The whole body of a small file endpoint (a chart, a study's plot)."""
        async with aclosing(self._stream(call)) as chunks:
            return b"".join([chunk async for chunk in chunks])

    async def run_chart(self, run_id: str) -> bytes:
        """The run's chart (PNG) from its whole metric history."""
        return await self.read_bytes(calls.run_chart(run_id))

    async def download_artifact(self, kind: ArtifactKind, artifact_id: str, dest: Path) -> Path:
        part = _partial(dest)
        try:
            with part.open("wb") as out:  # small blocking writes; the bot never downloads
                async with aclosing(self._stream(calls.artifact(kind, artifact_id))) as chunks:
                    async for chunk in chunks:
                        out.write(chunk)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return part.replace(dest)
