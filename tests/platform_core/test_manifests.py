"""Run and tokenizer manifests: versioned, written atomically, read whole or refused."""

from __future__ import annotations

import errno
import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from platform_core.errors import AppError, ErrorCode, FailureClass
from platform_core.manifests import (
    RUN_SCHEMA_VERSION,
    EvalPoint,
    MetricsSummary,
    RunFailure,
    RunManifest,
    read_metrics_summary,
    read_run_manifest,
    read_tokenizer_manifest,
    storage_error,
    write_atomic,
    write_manifest,
)
from platform_core.run_state import RunStatus
from platform_core.specs import TrainRunSpec

STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _manifest(**changes: object) -> RunManifest:
    base = RunManifest(
        run_id="run-1",
        kind="train_model",
        status=RunStatus.RUNNING,
        spec={"tokenizer_id": "tok"},
        started_at=STARTED,
    )
    return base.model_copy(update=changes)


def test_a_manifest_round_trips_and_carries_its_version(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    failure = RunFailure(
        error_code=ErrorCode.STORAGE_FULL,
        failure_class=FailureClass.FATAL,
        message="disk full",
        attempt=2,
    )
    manifest = _manifest(status=RunStatus.FAILED, failure=failure)
    write_manifest(path, manifest)
    assert json.loads(path.read_text())["schema_version"] == RUN_SCHEMA_VERSION
    assert read_run_manifest(path) == manifest
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temporary left


def test_a_manifest_from_before_versions_is_read_as_version_1(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    raw = json.loads(_manifest().model_dump_json())
    del raw["schema_version"]
    path.write_text(json.dumps(raw))
    assert read_run_manifest(path) == _manifest()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"schema_version": 3}', "schema version 3"),
        ("{not json", "is not JSON"),
        (b"\xff\xfe", "is not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"schema_version": 2, "run_id": "r"}', "kind: Field required"),
    ],
)
def test_an_unreadable_manifest_is_refused_whole(
    tmp_path: Path, content: str | bytes, reason: str
) -> None:
    path = tmp_path / "manifest.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(AppError) as info:
        read_run_manifest(path)
    assert info.value.code is ErrorCode.DATA_INVALID
    assert reason in info.value.message


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(AppError) as missing:
        read_run_manifest(tmp_path / "absent.json")
    assert missing.value.code is ErrorCode.DATA_NOT_FOUND
    with pytest.raises(AppError) as folder:
        read_tokenizer_manifest(tmp_path)  # a folder where a file should be
    assert folder.value.code is ErrorCode.DATA_INVALID


def test_non_finite_figures_are_recorded_as_null(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    summary = MetricsSummary(
        steps=3,
        final_loss=math.nan,
        best_eval_loss=math.inf,
        eval_history=[EvalPoint(step=1, eval_loss=-math.inf, perplexity=2.0)],
    )
    write_manifest(path, summary)
    read = read_metrics_summary(path)
    assert (read.final_loss, read.best_eval_loss) == (None, None)
    assert read.eval_history == [EvalPoint(step=1, eval_loss=None, perplexity=2.0)]


def test_the_train_spec_of_a_model_run_and_refusals(tmp_path: Path) -> None:
    spec = TrainRunSpec.model_validate({"tokenizer_id": "tok", "model": {"family": "gpt2"}})
    manifest = _manifest(spec=json.loads(spec.model_dump_json()))
    assert manifest.train_spec() == spec
    with pytest.raises(AppError, match="invalid spec") as bad:
        _manifest(spec={"tokenizer_id": ""}).train_spec()
    assert bad.value.code is ErrorCode.DATA_INVALID
    with pytest.raises(AppError, match="train_tokenizer run"):
        _manifest(kind="train_tokenizer").train_spec()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "manifest.json"
    write_manifest(path, _manifest())

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(AppError) as info:
        write_manifest(path, _manifest(status=RunStatus.COMPLETED))
    assert info.value.code is ErrorCode.STORAGE_FULL
    monkeypatch.undo()
    assert read_run_manifest(path).status is RunStatus.RUNNING
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_an_interrupted_write_removes_its_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(_fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "data.bin", b"x")
    assert list(tmp_path.iterdir()) == []


def test_storage_errors_are_typed() -> None:
    full = storage_error(OSError(errno.EDQUOT, "Disk quota exceeded"), "writing x")
    assert (full.code, full.message) == (
        ErrorCode.STORAGE_FULL,
        "writing x: no space left on the device",
    )
    other = storage_error(OSError(errno.EIO, "Input/output error"), "writing x")
    assert (other.code, other.message) == (ErrorCode.STORAGE_ERROR, "writing x: Input/output error")
    bare = storage_error(OSError("weird"), "writing x")
    assert bare.message == "writing x: OSError"


def test_a_manifest_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.json"
    write_manifest(real, _manifest())
    (tmp_path / "manifest.json").symlink_to(real)
    with pytest.raises(AppError) as info:
        read_run_manifest(tmp_path / "manifest.json")
    assert info.value.code is ErrorCode.DATA_INVALID
