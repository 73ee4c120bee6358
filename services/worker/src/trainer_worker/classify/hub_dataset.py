"""Rows from a Hugging Face dataset repository, without the `datasets` package (not
installed here): the repository's JSON / JSON Lines / CSV files of the requested split are
read from the local hub cache first, downloaded only when missing and the hub is allowed.
Parquet-only datasets need `datasets` (or pyarrow): a clear error says so."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from huggingface_hub import constants as hub_constants
from huggingface_hub import snapshot_download

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import HubSource
from trainer_worker.classify.local_files import file_rows
from trainer_worker.classify.records import LabelledText

_log = logging.getLogger(__name__)
DATA_PATTERNS: Final = ["*.json", "*.jsonl", "*.csv", "**/*.json", "**/*.jsonl", "**/*.csv"]
_READABLE: Final = (".jsonl", ".json", ".csv")


def hub_rows(source: HubSource, cache_dir: Path | None = None) -> Iterator[LabelledText]:
    folder = _snapshot_folder(source, cache_dir)
    files = split_files(folder, source.split)
    if not files:
        parquet = any(folder.rglob("*.parquet"))
        raise AppError(
            ErrorCode.DATA_INVALID,
            f"dataset {source.dataset_id} has no JSON, JSON Lines or CSV file for split "
            f"{source.split!r}"
            + (
                "; its files are Parquet, which needs the `datasets` package (not installed): "
                "export the split to JSON Lines and use a file source"
                if parquet
                else ""
            ),
        )
    for path in files:
        yield from file_rows(path, text_field=source.text_field, label_field=source.label_field)


def split_files(folder: Path, split: str) -> list[Path]:
    """The split's files, in the layouts hub datasets use: `<split>.jsonl`,
    `<split>-00000-of-00002.jsonl`, `data/<split>/...`, `<split>/...`."""
    found: list[Path] = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in _READABLE:
            continue
        relative = path.relative_to(folder)
        stem_split = relative.name.split(".")[0].split("-")[0]
        if stem_split == split or split in relative.parts[:-1]:
            found.append(path)
    return found


def _snapshot_folder(source: HubSource, cache_dir: Path | None) -> Path:
    cache = (cache_dir or Path(hub_constants.HF_HUB_CACHE)).expanduser().resolve()
    try:
        return _snapshot(source, cache, local_only=True)
    except (OSError, ValueError):
        _log.info(
            "dataset not in the local hub cache",
            extra={"event": "dataset.cache_miss", "dataset": source.dataset_id},
        )
    if _hub_offline():
        raise AppError(
            ErrorCode.DATA_NOT_FOUND,
            f"dataset {source.dataset_id} is not in the hub cache and offline mode is on",
        )
    try:
        return _snapshot(source, cache, local_only=False)
    except (OSError, ValueError) as exc:
        raise AppError(
            ErrorCode.UPSTREAM_UNAVAILABLE,
            f"dataset {source.dataset_id} is not in the hub cache and the download failed "
            f"({type(exc).__name__}); download it on a machine with internet access "
            f"(`huggingface-cli download --repo-type dataset {source.dataset_id}`) or use a "
            "file source",
        ) from exc


def _snapshot(source: HubSource, cache: Path, *, local_only: bool) -> Path:
    folder = snapshot_download(
        source.dataset_id,
        repo_type="dataset",
        revision=source.revision,
        cache_dir=cache,
        local_files_only=local_only,
        allow_patterns=DATA_PATTERNS,
    )
    return Path(str(folder))


def _hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return flag in {"1", "true", "yes", "on"} or hub_constants.is_offline_mode()
