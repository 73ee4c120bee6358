"""A hub dataset read from the local hub cache (the layout huggingface_hub writes), with no
network; a cache miss with the hub unreachable, and a Parquet-only dataset, are clear
errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import HubSource
from trainer_worker.classify.hub_dataset import hub_rows, split_files

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cached_dataset(cache: Path, repo: str, files: dict[str, str]) -> Path:
    """A dataset snapshot as huggingface_hub keeps it: refs/main -> snapshots/<commit>/."""
    folder = cache / f"datasets--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snapshot = folder / "snapshots" / COMMIT
    for name, text in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_text(text)
    return snapshot


def test_reads_the_split_from_the_cache_with_named_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train = "".join(json.dumps({"sentence": f"text {i}", "topic": i % 2}) + "\n" for i in range(4))
    _cached_dataset(
        tmp_path,
        "someone/topics",
        {"data/train-00000-of-00001.jsonl": train, "data/test.jsonl": "{}\n"},
    )
    source = HubSource(dataset_id="someone/topics", text_field="sentence", label_field="topic")
    rows = list(hub_rows(source, cache_dir=tmp_path))
    assert [(row.text, row.label) for row in rows] == [
        ("text 0", "0"),
        ("text 1", "1"),
        ("text 2", "0"),
        ("text 3", "1"),
    ]


def test_split_files_know_the_hub_layouts(tmp_path: Path) -> None:
    for name in ("train.csv", "validation.jsonl", "data/train/part-0.json", "README.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    found = [p.relative_to(tmp_path).as_posix() for p in split_files(tmp_path, "train")]
    assert found == ["data/train/part-0.json", "train.csv"]


def test_a_cache_miss_offline_and_parquet_only_are_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AppError) as missing:
        list(hub_rows(HubSource(dataset_id="nobody/nothing"), cache_dir=tmp_path))
    assert missing.value.code is ErrorCode.DATA_NOT_FOUND
    assert "offline mode" in missing.value.message
    _cached_dataset(tmp_path, "someone/parquet", {"data/train-0.parquet": "PAR1"})
    with pytest.raises(AppError) as parquet:
        list(hub_rows(HubSource(dataset_id="someone/parquet"), cache_dir=tmp_path))
    assert parquet.value.code is ErrorCode.DATA_INVALID
    assert "`datasets` package" in parquet.value.message
