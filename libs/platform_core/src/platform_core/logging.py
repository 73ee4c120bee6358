"""Structured logging shared by every service.

`configure_logging(service)` installs one handler on the root logger: JSON lines in
production, readable text in development; libraries' own handlers are removed so their
records reach it, and every record is masked when it is made, so a handler added later prints
masked text too. Every record carries timestamp, level, logger,
message, service, instance_id and, when known, request_id, run_id, event and error_code
(from `extra=` or from `log_context`). The formatter masks secrets itself, whatever the caller
passes: tokens, API keys, Authorization headers, passwords in URLs, e-mail addresses, and the
exact values of every secret the settings hold.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO, TypedDict

from platform_core.settings import LogFormat

MASK = "***"

# Fields callers may pass through `extra=`; anything else is dropped so that a careless
# `extra={"text": corpus}` never reaches a log line.
LOGGING_EXTRA_FIELDS: tuple[str, ...] = (
    "request_id",
    "run_id",
    "event",
    "error_code",
    "category",
    "tokenizer_id",
    "study_id",
    "user_id",
    "step",
    "loss",
    "lr",
    "duration_ms",
    "status_code",
    "method",
    "path",
    "attempt",
)


class LoggingExtra(TypedDict, total=False):
    request_id: str
    run_id: str
    event: str
    error_code: str
    category: str
    tokenizer_id: str
    study_id: str
    user_id: int
    step: int
    loss: float
    lr: float
    duration_ms: float
    status_code: int
    method: str
    path: str
    attempt: int


_CONTEXT_FIELDS = ("request_id", "run_id")
_context: ContextVar[dict[str, str]] = ContextVar("platform_core_log_context", default={})  # noqa: B039  # never mutated in place

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"(?P<k>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?=@)"), rf"\g<k>{MASK}"),
    # Authorization: Bearer xyz / Authorization=Basic xyz
    (
        re.compile(
            r"(?i)(?P<k>authorization['\"]?\s*[:=]\s*['\"]?)(?:(?:bearer|basic|bot)\s+)?[^\s'\",}]+"
        ),
        rf"\g<k>{MASK}",
    ),
    (re.compile(r"(?i)(?P<k>\bbearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\g<k>{MASK}"),
    # api_key=..., X-Api-Key: ..., password=..., secret: ...: whatever the value
    (
        re.compile(
            r"(?i)(?P<k>(?<![a-z0-9])(?:x-api-key|api[_-]?key|access[_-]?token|secret|password|passwd|pwd)"
            r"['\"]?\s*[:=]\s*['\"]?)[^\s'\",}&]+"
        ),
        rf"\g<k>{MASK}",
    ),
    # refresh_token=..., X-Auth-Token: ..., DISCORD_TOKEN=...: a name ending in "token" is a
    # credential whatever the value, except a tokenizer's special tokens (eos_token, ...)
    (
        re.compile(
            r"(?i)(?P<k>(?<![a-z0-9_-])"
            r"(?!(?:eos|bos|pad|unk|mask|sep|cls|special|start|end|stop)[_-]token)"
            r"(?:[a-z0-9]+[_-])+token['\"]?\s*[:=]\s*['\"]?)[^\s'\",}&]+"
        ),
        rf"\g<k>{MASK}",
    ),
    # "token": "...", token=...: the bare word is everyday vocabulary here ("token: console",
    # "token=50256"), so only a value that looks generated (6+ characters with a digit, or 16+)
    (
        re.compile(
            r"(?i)(?P<k>(?<![a-z0-9_-])token['\"]?\s*[:=]\s*['\"]?)"
            r"(?:(?=[^\s'\",}&]*[0-9])[^\s'\",}&]{6,}|[^\s'\",}&]{16,})"
        ),
        rf"\g<k>{MASK}",
    ),
    # Discord bot tokens: three base64url parts separated by dots.
    (re.compile(r"\b[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,40}\b"), MASK),
    # e-mail addresses
    (re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"), MASK),
)


class SecretMasker:
    """Masks secret-looking substrings and the exact configured secret values."""

    def __init__(self, secret_values: Sequence[str] = ()) -> None:
        # Longest first so a secret that contains another is masked whole.
        self._values = sorted({v for v in secret_values if len(v) >= 4}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


class _Formatter(logging.Formatter):
    def __init__(
        self, service: str, instance_id: str, fmt: LogFormat, masker: SecretMasker
    ) -> None:
        super().__init__()
        self._service = service
        self._instance_id = instance_id
        self._format = fmt
        self._masker = masker

    def _fields(self, record: logging.LogRecord) -> dict[str, object]:
        fields: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": self._masker.mask(record.getMessage()),
            "service": self._service,
            "instance_id": self._instance_id,
        }
        # context values come from outside too (a client's X-Request-ID): masked like the rest
        fields.update({name: self._masker.mask(value) for name, value in _context.get().items()})
        for name in LOGGING_EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if isinstance(value, str):
                fields[name] = self._masker.mask(value)
            elif isinstance(value, int | float):
                fields[name] = value
        if record.exc_info:
            fields["exception"] = self._masker.mask(self.formatException(record.exc_info))
        return fields

    def format(self, record: logging.LogRecord) -> str:
        fields = self._fields(record)
        if self._format is LogFormat.JSON:
            return json.dumps(fields, ensure_ascii=False, default=str)
        head = f"{fields.pop('timestamp')} {fields.pop('level'):<8} {fields.pop('logger')}: "
        message = fields.pop("message")
        exception = fields.pop("exception", None)
        for name in ("service", "instance_id"):
            fields.pop(name)
        context = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{head}{message}" + (f" [{context}]" if context else "")
        return line + (f"\n{exception}" if exception else "")


def configure_logging(
    service: str,
    *,
    level: str = "INFO",
    fmt: LogFormat = LogFormat.JSON,
    secret_values: Sequence[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Install the structured handler on the root logger (replacing earlier ones) and return
    it. Called once at the start of each service, worker and script."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        _Formatter(service, uuid.uuid4().hex[:12], fmt, SecretMasker(secret_values))
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Chatty libraries would log request URLs (which may carry credentials) at INFO.
    for noisy in ("httpx", "httpcore", "urllib3", "asyncio", "filelock", "discord.gateway"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # libraries that install their own handler: their records go through ours instead
    for library in OWN_HANDLER_LIBRARIES:
        own = logging.getLogger(library)
        for old in list(own.handlers):
            own.removeHandler(old)
        own.propagate = True
    # masked when each record is made, so that every handler prints it masked: a library's
    # own handler installed later, a file handler, pytest's capture
    logging.setLogRecordFactory(_MaskingRecordFactory(SecretMasker(secret_values)))
    return handler


# libraries known to attach a handler of their own to their top logger
OWN_HANDLER_LIBRARIES = ("transformers", "huggingface_hub", "discord", "urllib3", "datasets")
_BASE_FACTORY = logging.getLogRecordFactory()


class _MaskingRecordFactory:
    """logging's record factory, masking each record's message, exception and stack."""

    def __init__(self, masker: SecretMasker) -> None:
        self._masker = masker

    def __call__(self, *args: object, **kwargs: object) -> logging.LogRecord:
        record = _BASE_FACTORY(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # bad %-arguments: the handler reports them as usual
            return record
        masked = self._masker.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self._masker.mask(text)
        if record.stack_info:
            record.stack_info = self._masker.mask(record.stack_info)
        return record


class _RunFilter(logging.Filter):
    def __init__(self, run_id: str) -> None:
        super().__init__()
        self._run_id = run_id

    def filter(self, record: logging.LogRecord) -> bool:
        return (
            _context.get().get("run_id") == self._run_id
            or record.__dict__.get("run_id") == self._run_id
        )


@contextmanager
def run_log(
    path: Path, run_id: str, *, service: str, secret_values: Sequence[str] = ()
) -> Iterator[None]:
    """Also write every record about `run_id` (logged inside `log_context(run_id=...)` or with
    `extra={"run_id": ...}`) as JSON lines to `path`: a run's own `logs.jsonl`."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(
        _Formatter(service, uuid.uuid4().hex[:12], LogFormat.JSON, SecretMasker(secret_values))
    )
    handler.addFilter(_RunFilter(run_id))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        try:
            handler.close()  # flushes: on a full disk the run's own error must stay the one
        except OSError as exc:
            logging.getLogger(__name__).warning(
                "the run log could not be flushed: %s",
                exc.strerror or type(exc).__name__,
                extra={"event": "run_log.unflushed", "run_id": run_id},
            )


@contextmanager
def log_context(**values: str) -> Iterator[None]:
    """Attach request_id / run_id to every record logged inside the block (thread- and
    task-local through contextvars)."""
    unknown = set(values) - set(_CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"unknown log context fields: {sorted(unknown)}")
    token = _context.set({**_context.get(), **values})
    try:
        yield
    finally:
        _context.reset(token)
