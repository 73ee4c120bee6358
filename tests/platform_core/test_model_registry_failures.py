"""The model registry when things go wrong, on a real Redis and a real data root: a folder
that cannot be made, a registration that loses its race on disk or in Redis, a history file
that cannot be appended to, a stage or key Redis should never hold, a model folder whose
metadata is gone, and the code's git commit when git is missing. The model files are plain
files here (the registry copies them and never imports torch)."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from platform_core import model_registry
from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import ModelPromoted, ModelRolledBack
from platform_core.layout import DataLayout
from platform_core.model_registry import (
    METADATA_FILE,
    ModelRegistry,
    git_commit,
    history_key,
    stage_changed_event,
    versions_key,
)
from tests.manifests import write_run_manifest

pytestmark = pytest.mark.integration

WEIGHTS = b"\x00\x01weights" * 64


def _saved_model(layout: DataLayout, run_id: str) -> Path:
    """A run folder holding what a saved transformers model would: config and weights, plus a
    link and a file that from_pretrained never reads (neither is registered)."""
    folder = layout.model_dir(run_id)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    (folder / "model.safetensors").write_bytes(WEIGHTS)
    (folder / "notes.md").write_text("not a model file", encoding="utf-8")
    (folder / "linked.json").symlink_to(folder / "config.json")
    return folder


@pytest.fixture
def layout(data_root: Path) -> DataLayout:
    layout = DataLayout(data_root)
    _saved_model(layout, "run-m")
    return layout


@pytest.fixture
def registry(redis_client: redis.Redis, layout: DataLayout) -> ModelRegistry:
    return ModelRegistry(redis_client, layout, bus=EventBus(redis_client))


def _register(registry: ModelRegistry, name: str = "m", version: str | None = None) -> str:
    metadata = registry.register(
        name, version, source_run="run-m", dataset_id=None, actor="ana", reason="test"
    )
    return metadata.version


def test_files_are_copied_when_they_cannot_be_hard_linked(
    registry: ModelRegistry, layout: DataLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another file system: os.link refuses (EXDEV) and the files are copied, with the same
    digests; links and files from_pretrained never reads stay behind."""

    def cross_device(source: object, target: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    monkeypatch.setenv("APP_GIT_COMMIT", "c" * 80)
    write_run_manifest(layout.run_dir("run-m"), {"lr": 0.5})
    layout.eval_metrics("run-m").parent.mkdir(parents=True)
    layout.eval_metrics("run-m").write_text("{not json", encoding="utf-8")

    metadata = registry.register(
        "copied", None, source_run="run-m", dataset_id=None, actor="ana", reason="copy"
    )

    folder = layout.model_version_dir("copied", "1.0.0")
    source = layout.model_dir("run-m") / "model.safetensors"
    assert sorted(metadata.files) == ["config.json", "model.safetensors"]
    assert metadata.files["model.safetensors"] == hashlib.sha256(WEIGHTS).hexdigest()
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "model.safetensors").stat().st_ino != source.stat().st_ino  # a copy
    assert metadata.git_commit == "c" * 64  # APP_GIT_COMMIT, cut to the field's length
    assert metadata.hyperparameters == {"lr": 0.5}  # the run's spec
    assert metadata.metrics == {}  # an unreadable metrics summary is left out, not fatal
    assert sorted(path.name for path in folder.iterdir()) == [
        "config.json",
        METADATA_FILE,
        "model.safetensors",
    ]


def test_a_full_disk_while_copying_is_storage_full_and_leaves_no_folder(
    registry: ModelRegistry, layout: DataLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cross_device(source: object, target: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def disk_full(source: object, target: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", cross_device)
    monkeypatch.setattr(shutil, "copy2", disk_full)
    with pytest.raises(AppError) as full:
        _register(registry, "full")
    assert full.value.code is ErrorCode.STORAGE_FULL
    assert list(layout.registered_model_dir("full").iterdir()) == []  # no staging folder left
    assert registry.names() == []


def test_a_name_whose_folder_cannot_be_made_is_a_storage_error(
    registry: ModelRegistry, layout: DataLayout, redis_client: redis.Redis
) -> None:
    layout.models_dir.mkdir()
    layout.registered_model_dir("blocked").write_text("a file where the folder goes")
    with pytest.raises(AppError) as refused:
        _register(registry, "blocked")
    assert refused.value.code is ErrorCode.STORAGE_ERROR
    assert "registering blocked 1.0.0" in refused.value.message
    assert not redis_client.exists(versions_key("blocked"), history_key("blocked"))


def test_losing_the_race_for_the_folder_is_a_conflict_and_leaves_no_staging_folder(
    registry: ModelRegistry, layout: DataLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another registration renames its folder into place after this one checked: the rename
    is refused, this one's staging folder goes, and the winner's files stay."""
    winner = layout.model_version_dir("raced", "1.0.0")

    def other_registration_lands() -> str:
        winner.mkdir(parents=True)
        (winner / METADATA_FILE).write_text("{}", encoding="utf-8")
        return "f" * 40

    monkeypatch.setattr(model_registry, "git_commit", other_registration_lands)
    with pytest.raises(AppError) as refused:
        _register(registry, "raced")
    assert refused.value.code is ErrorCode.CONFLICT
    assert sorted(path.name for path in winner.parent.iterdir()) == ["1.0.0"]
    assert sorted(path.name for path in winner.iterdir()) == [METADATA_FILE]


def test_losing_the_race_in_redis_removes_the_folder_and_writes_no_history(
    registry: ModelRegistry,
    layout: DataLayout,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another API process registered the version in Redis after this one checked: the
    script refuses it (CONFLICT) and the files this one put in place go."""

    def other_process_registers() -> None:
        redis_client.hset(versions_key("raced"), "1.0.0", "staging")

    monkeypatch.setattr(model_registry, "git_commit", other_process_registers)
    with pytest.raises(AppError) as refused:
        _register(registry, "raced")
    assert refused.value.code is ErrorCode.CONFLICT
    assert refused.value.message == "version 1.0.0 of raced is already registered"
    assert not layout.model_version_dir("raced", "1.0.0").exists()
    assert not layout.model_history("raced").exists()
    assert redis_client.llen(history_key("raced")) == 0


def test_a_history_file_that_refuses_the_append_is_logged_and_redis_keeps_the_entry(
    registry: ModelRegistry, layout: DataLayout, caplog: pytest.LogCaptureFixture
) -> None:
    layout.model_history("lost").mkdir(parents=True)  # a folder where the log file goes
    with caplog.at_level(logging.ERROR, logger=model_registry.__name__):
        version = _register(registry, "lost")
        change = registry.promote("lost", version, "production", actor="ana", reason="go")
    assert registry.production("lost") == "1.0.0"
    assert [entry.action for entry in registry.history("lost")] == ["register", "promote"]
    assert registry.history("lost")[-1] == change
    unwritten = [
        r for r in caplog.records if getattr(r, "event", None) == "registry.history_unwritten"
    ]
    assert len(unwritten) == 2  # the registration and the promotion
    assert layout.model_history("lost").is_dir()  # nothing written over it


def test_a_stage_redis_should_never_hold_is_data_invalid(
    registry: ModelRegistry, redis_client: redis.Redis
) -> None:
    redis_client.hset(versions_key("odd"), "1.0.0", "testing")
    with pytest.raises(AppError) as invalid:
        registry.versions("odd")
    assert invalid.value.code is ErrorCode.DATA_INVALID
    assert "'testing'" in invalid.value.message


def test_a_history_key_of_the_wrong_type_refuses_the_change_whole(
    registry: ModelRegistry, layout: DataLayout, redis_client: redis.Redis
) -> None:
    """The history key holds a string (someone wrote over it): Redis answers WRONGTYPE, the
    change is an internal error, and no stage moved (a script keeps what it wrote before a
    failing call, so the append comes first)."""
    version = _register(registry, "clobbered")
    redis_client.delete(history_key("clobbered"))
    redis_client.set(history_key("clobbered"), "not a list")
    with pytest.raises(AppError) as failed:
        registry.promote("clobbered", version, "production", actor="ana", reason="go")
    assert failed.value.code is ErrorCode.INTERNAL
    assert "WRONGTYPE" in failed.value.message
    assert registry.production("clobbered") is None
    assert [(v.version, v.stage) for v in registry.versions("clobbered")] == [("1.0.0", "staging")]

    with pytest.raises(AppError) as refused:
        _register(registry, "clobbered")
    assert refused.value.code is ErrorCode.INTERNAL
    assert [v.version for v in registry.versions("clobbered")] == ["1.0.0"]
    assert not layout.model_version_dir("clobbered", "1.1.0").exists()


def test_a_promotion_whose_metadata_is_gone_is_published_under_the_models_name(
    registry: ModelRegistry, layout: DataLayout, redis_client: redis.Redis
) -> None:
    version = _register(registry, "bare")
    (layout.model_version_dir("bare", version) / METADATA_FILE).unlink()
    change = registry.promote("bare", version, "production", actor="123456789012345678", reason="")
    [delivery] = EventBus(redis_client).read()
    assert isinstance(delivery.event, ModelPromoted)
    assert delivery.event.run_id == "model-bare"  # no metadata: no source run to name
    assert delivery.event.user_id == 123456789012345678  # the actor is a Discord id
    assert delivery.event.payload.version == change.version == "1.0.0"


def test_a_rollback_is_published_and_names_list_the_registered_models(
    registry: ModelRegistry, redis_client: redis.Redis
) -> None:
    with pytest.raises(AppError) as unknown:
        registry.versions("roll")
    assert unknown.value.code is ErrorCode.NOT_FOUND
    for version in ("1.0.0", "2.0.0"):
        _register(registry, "roll", version)
        registry.promote("roll", version, "production", actor="ci", reason="")
    _register(registry, "another")
    change = registry.rollback("roll", actor="ana", reason="bad release")
    assert (change.version, change.previous_production) == ("1.0.0", "2.0.0")
    assert registry.names() == ["another", "roll"]
    last = EventBus(redis_client).read()[-1].event
    assert isinstance(last, ModelRolledBack)
    assert (last.run_id, last.user_id, last.payload.version) == ("run-m", None, "1.0.0")


def test_a_registration_is_no_change_of_stage(registry: ModelRegistry) -> None:
    _register(registry, "reg")
    [registration] = registry.history("reg")
    assert registration.action == "register" and registration.from_stage is None
    with pytest.raises(AppError) as refused:
        stage_changed_event(registration, "run-m")
    assert refused.value.code is ErrorCode.INTERNAL


def test_git_commit_is_the_repositorys_head_or_none_without_git(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("APP_GIT_COMMIT", raising=False)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=Path(model_registry.__file__).parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert git_commit() == head
    monkeypatch.setenv("PATH", str(tmp_path))  # no git to run
    assert git_commit() is None


def test_git_commit_is_none_when_git_hangs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A git that never answers (a hung network file system) is given up after its timeout;
    a git that fails answers no commit."""
    monkeypatch.delenv("APP_GIT_COMMIT", raising=False)
    fake_git = tmp_path / "git"
    fake_git.write_text("#!/bin/sh\necho 'fatal: not a git repository' >&2\nexit 128\n")
    fake_git.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert git_commit() is None

    def hangs(*args: object, **kwargs: object) -> None:
        raise subprocess.TimeoutExpired(cmd="git", timeout=5)

    monkeypatch.setattr(subprocess, "run", hangs)
    assert git_commit() is None
