"""The API's cache of parsed run manifests: a hit costs a stat, a replaced file is re-read."""

from __future__ import annotations

import json
import os
from pathlib import Path

from platform_core.errors import AppError, ErrorCode
from trainer_api.run_views import ManifestCache, ManifestView


def _write(path: Path, status: str, run_id: str = "r") -> None:
    """As the worker does: a new file renamed over the old one."""
    manifest = {
        "run_id": run_id,
        "kind": "train_model",
        "status": status,
        "spec": {},
        "started_at": "2026-01-01T00:00:00Z",
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest), encoding="utf-8")
    os.replace(tmp, path)


def test_a_hit_is_the_same_parsed_object_and_a_replaced_file_is_read_again(
    tmp_path: Path,
) -> None:
    cache = ManifestCache()
    path = tmp_path / "manifest.json"
    _write(path, "running")
    first = cache.get(path)
    assert isinstance(first, ManifestView) and first.manifest.status == "running"
    assert cache.get(path) is first  # no second read or parse
    _write(path, "running", "s")  # same size, new inode: never served stale
    again = cache.get(path)
    assert isinstance(again, ManifestView) and again.manifest.run_id == "s"


def test_a_missing_manifest_is_none_and_a_malformed_one_its_error(tmp_path: Path) -> None:
    cache = ManifestCache()
    assert cache.get(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    error = cache.get(tmp_path / "bad.json")
    assert isinstance(error, AppError) and error.code is ErrorCode.DATA_INVALID


def test_the_cache_keeps_the_most_recently_used_entries(tmp_path: Path) -> None:
    cache = ManifestCache(size=2)
    paths = [tmp_path / f"m{i}.json" for i in range(3)]
    for path in paths:
        _write(path, "completed")
    kept = cache.get(paths[0])
    cache.get(paths[1])
    assert cache.get(paths[0]) is kept  # used again: now the newest
    cache.get(paths[2])  # evicts paths[1], the least recently used
    assert cache.get(paths[0]) is kept
    assert len(cache._entries) == 2 and str(paths[1]) not in cache._entries
