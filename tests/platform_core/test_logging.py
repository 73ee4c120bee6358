"""Structured logs: fields, context, formats, and masking done by the formatter itself."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from platform_core.logging import MASK, SecretMasker, configure_logging, log_context, run_log
from platform_core.settings import LogFormat

log = logging.getLogger("tests.logging")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_factory = logging.getLogRecordFactory()
    out = io.StringIO()
    configure_logging(
        "test-svc", fmt=LogFormat.JSON, secret_values=["sup3r-s3cret-value"], stream=out
    )
    yield out
    logging.setLogRecordFactory(saved_factory)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


def _records(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_fields_and_context(stream: io.StringIO) -> None:
    with log_context(request_id="req-1", run_id="run-1"):
        log.info(
            "training %s",
            "started",
            extra={"event": "job.started", "error_code": "NONE", "step": 3},
        )
    log.info("outside")
    first, second = _records(stream)
    assert first["message"] == "training started"
    assert first["service"] == "test-svc"
    assert first["level"] == "INFO"
    assert first["logger"] == "tests.logging"
    assert isinstance(first["instance_id"], str)
    assert str(first["timestamp"]).endswith("+00:00")
    assert (first["request_id"], first["run_id"], first["event"], first["step"]) == (
        "req-1",
        "run-1",
        "job.started",
        3,
    )
    assert first["error_code"] == "NONE"
    assert "request_id" not in second and "run_id" not in second


def test_unknown_extra_fields_are_dropped(stream: io.StringIO) -> None:
    log.info("x", extra={"text": "a line of the user's corpus", "loss": 1.5, "run_id": object()})
    (record,) = _records(stream)
    assert "text" not in record
    assert record["loss"] == 1.5
    assert "run_id" not in record  # neither str nor number


def test_log_context_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown log context"), log_context(corpus="x"):
        pass


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("connecting to redis://user:hunter2@redis:6379/0", "hunter2"),
        ("connecting to redis://:hunter2@redis:6379/0", "hunter2"),
        ("headers {'Authorization': 'Bearer abc.def.ghi'}", "abc.def.ghi"),
        (
            "Authorization: Bot MTIzNDU2Nzg5MDEyMzQ1Njc4.GAbCdE.abcdefghijklmnopqrstuvwxyz0123",
            "GAbCdE",
        ),
        (
            "token MTIzNDU2Nzg5MDEyMzQ1Njc4OTA.GAbCdE.abcdefghijklmnopqrstuvwxyz0123 leaked",
            "abcdefghijklmnopqrstuvwxyz0123",
        ),
        ("X-Api-Key: k-123456", "k-123456"),
        ("url ?api_key=k-123456&x=1", "k-123456"),
        ('{"password": "pa55word"}', "pa55word"),
        ("DISCORD_TOKEN=abcdef123", "abcdef123"),
        ('{"token": "abc123def456"}', "abc123def456"),
        ("refresh_token=abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuvwxyz"),
        ("refresh_token=abcdefghijklm", "abcdefghijklm"),
        ('{"token": "s3cr3t"}', "s3cr3t"),
        ("session-token=QWERTYUIOPASDFG", "QWERTYUIOPASDFG"),
        ("X-Auth-Token: abcdefghijkl", "abcdefghijkl"),
        ("password: letmein", "letmein"),
        ("mail alice.smith@example.org now", "alice.smith@example.org"),
        ("configured value sup3r-s3cret-value appears", "sup3r-s3cret-value"),
    ],
)
def test_formatter_masks_secrets(stream: io.StringIO, text: str, leaked: str) -> None:
    log.warning(text)
    log.warning("in extra", extra={"path": text})
    raw = stream.getvalue()
    assert leaked not in raw
    assert MASK in raw


@pytest.mark.parametrize(
    "text",
    [
        "token: console",
        "mode token: console",
        "eos token: <|endoftext|>",
        '{"token": "<unk>"}',
        "token=50256",
        "eos_token: <|endoftext|>",
        "pad_token=<pad>",
    ],
)
def test_tokenizer_prose_after_token_is_kept(text: str) -> None:
    """ "token" is everyday vocabulary in a tokenizer project; only a value that looks
    generated is masked after it."""
    assert SecretMasker().mask(text) == text


def test_exceptions_are_masked_too(stream: io.StringIO) -> None:
    try:
        raise RuntimeError("cannot reach redis://:hunter2@host:1/0")
    except RuntimeError:
        log.exception("boom")
    (record,) = _records(stream)
    assert "hunter2" not in json.dumps(record)
    assert "RuntimeError" in str(record["exception"])


def test_text_format_is_readable() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved = list(root.handlers)
    try:
        configure_logging("svc", fmt=LogFormat.TEXT, stream=out)
        with log_context(run_id="run-7"):
            log.info("hello", extra={"event": "greet"})
        try:
            raise ValueError("bad")
        except ValueError:
            log.exception("plain")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
    lines = out.getvalue().splitlines()
    assert "INFO" in lines[0] and "tests.logging: hello [run_id=run-7 event=greet]" in lines[0]
    assert lines[1].endswith("tests.logging: plain")
    assert "ValueError: bad" in out.getvalue()


def test_masker_ignores_tiny_values_and_masks_longest_first() -> None:
    masker = SecretMasker(["abc", "token-value", "token-value-long"])
    assert masker.mask("abc token-value-long") == f"abc {MASK}"


def test_configure_logging_replaces_handlers_and_quiets_libraries(stream: io.StringIO) -> None:
    stale = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(stale)
    handler = configure_logging("again", fmt=LogFormat.JSON, stream=stream)
    assert stale not in logging.getLogger().handlers
    assert handler in logging.getLogger().handlers
    assert logging.getLogger("httpx").level == logging.WARNING


def test_run_log_keeps_only_that_runs_records(stream: io.StringIO, tmp_path: Path) -> None:
    path = tmp_path / "logs.jsonl"
    with run_log(path, "run-9", service="worker", secret_values=["hunter2-secret"]):
        with log_context(run_id="run-9"):
            log.info("step 1 with hunter2-secret")
        with log_context(run_id="other"):
            log.info("not mine")
        log.info("tagged", extra={"run_id": "run-9"})
        log.info("untagged")
    log.info("after", extra={"run_id": "run-9"})
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["message"] for r in records] == [f"step 1 with {MASK}", "tagged"]
    assert all(r["service"] == "worker" for r in records)


def test_a_run_log_that_cannot_be_flushed_keeps_the_runs_own_error(
    stream: io.StringIO, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(_self: logging.FileHandler) -> None:
        raise OSError(28, "No space left on device")

    log = tmp_path / "logs.jsonl"
    with pytest.raises(KeyError, match="own error"), run_log(log, "run-9", service="worker"):
        monkeypatch.setattr(logging.FileHandler, "close", full)
        raise KeyError("the run's own error")
    monkeypatch.undo()
    assert "could not be flushed: No space left on device" in stream.getvalue()


def test_context_fields_are_masked(stream: io.StringIO) -> None:
    """An X-Request-ID equal to the API key was logged verbatim."""
    with log_context(request_id="sup3r-s3cret-value", run_id="run-1"):
        log.info("hello")
    (record,) = _records(stream)
    assert (record["request_id"], record["run_id"]) == (MASK, "run-1")


@pytest.mark.parametrize(
    "library", ["transformers.modeling_utils", "huggingface_hub.file_download"]
)
def test_a_librarys_own_handler_prints_masked_text(stream: io.StringIO, library: str) -> None:
    """transformers and huggingface_hub attach their own handler (propagate off) when they
    are imported, possibly after configure_logging: what it prints is masked too."""
    own = io.StringIO()
    top = logging.getLogger(library.split(".", maxsplit=1)[0])
    handler = logging.StreamHandler(own)
    top.addHandler(handler)
    top.propagate = False
    try:
        url = "https://user:hunter2@hub.example/api?token=abcdef123456"
        logging.getLogger(library).warning("fetching %s with sup3r-s3cret-value", url)
        try:
            raise OSError("401 for Authorization: Bearer abcdefghijkl")
        except OSError:
            logging.getLogger(library).exception("failed")
    finally:
        top.removeHandler(handler)
        top.propagate = True
    printed = own.getvalue()
    for leaked in ("hunter2", "abcdef123456", "sup3r-s3cret-value", "abcdefghijkl"):
        assert leaked not in printed
    assert "fetching https://user:***@hub.example" in printed and "OSError" in printed


def test_configure_logging_routes_library_handlers_to_the_root(stream: io.StringIO) -> None:
    top = logging.getLogger("discord")
    top.addHandler(logging.StreamHandler(io.StringIO()))
    top.propagate = False
    configure_logging("again", fmt=LogFormat.JSON, stream=stream)
    assert (top.handlers, top.propagate) == ([], True)
    logging.getLogger("discord.http").warning("console mode: DMs go to the log")
    assert _records(stream)[-1]["message"] == "console mode: DMs go to the log"


def test_a_record_whose_arguments_do_not_format_is_left_to_the_handler(
    stream: io.StringIO,
) -> None:
    record = logging.getLogRecordFactory()("x", logging.INFO, "f", 1, "%d", ("a",), None)
    assert (record.msg, record.args) == ("%d", ("a",))


def test_stack_info_is_masked(stream: io.StringIO) -> None:
    record = logging.getLogRecordFactory()(
        "x", logging.INFO, "f", 1, "m", None, None, None, "at redis://:hunter2@h"
    )
    assert record.stack_info is not None and "hunter2" not in record.stack_info
