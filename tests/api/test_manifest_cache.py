"""The API's cache of parsed run manifests: a hit costs a stat, a replaced file is re-read."""

from __future__ import annotations

import json
import os
from pathlib import Path

from trainer_api.run_views import ManifestCache


def _write(path: Path, status: str) -> None:
    """As the worker does: a new file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"status": status, "kind": "train_model"}), encoding="utf-8")
    os.replace(tmp, path)


def test_a_hit_is_the_same_parsed_object_and_a_replaced_file_is_read_again(
    tmp_path: Path,
) -> None:
    cache = ManifestCache()
    path = tmp_path / "manifest.json"
    _write(path, "running")
    first = cache.get(path)
    assert first is not None and first.status == "running"
    assert cache.get(path) is first  # no second read or parse
    _write(path, "done!!!")  # same size, new inode: never served stale
    again = cache.get(path)
    assert again is not None and again.status == "done!!!"


def test_missing_and_malformed_manifests_are_none(tmp_path: Path) -> None:
    cache = ManifestCache()
    assert cache.get(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    assert cache.get(tmp_path / "bad.json") is None


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
