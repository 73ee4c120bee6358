"""User paths resolve inside the data root or are refused."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from platform_core.errors import AppError, ErrorCode
from platform_core.paths import id_folders, open_regular, read_regular_text, resolve_inside


def test_relative_paths_resolve_inside(tmp_path: Path) -> None:
    assert resolve_inside(tmp_path, "corpus/a.txt") == tmp_path.resolve() / "corpus" / "a.txt"
    assert resolve_inside(tmp_path, "corpus/../b.txt") == tmp_path.resolve() / "b.txt"
    assert resolve_inside(tmp_path, ".") == tmp_path.resolve()


@pytest.mark.parametrize(
    ("user_path", "code"),
    [
        ("", ErrorCode.INVALID_INPUT),
        ("a\x00b", ErrorCode.INVALID_INPUT),
        ("/etc/passwd", ErrorCode.PATH_OUTSIDE_DATA_ROOT),
        ("../secret", ErrorCode.PATH_OUTSIDE_DATA_ROOT),
        ("a/../../secret", ErrorCode.PATH_OUTSIDE_DATA_ROOT),
    ],
)
def test_refused(tmp_path: Path, user_path: str, code: ErrorCode) -> None:
    with pytest.raises(AppError) as info:
        resolve_inside(tmp_path, user_path)
    assert info.value.code is code


def test_symlink_leading_out_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "inside-link").symlink_to(root)
    (root / "escape").symlink_to(outside)
    assert resolve_inside(root, "inside-link/x") == root.resolve() / "x"
    with pytest.raises(AppError) as info:
        resolve_inside(root, "escape/data.txt")
    assert info.value.code is ErrorCode.PATH_OUTSIDE_DATA_ROOT


@pytest.mark.parametrize(
    "user_path",
    ["runs/r1", "runs/r1/manifest.json", "runs/new/x", "./runs//r1/", "notes.txt/x", "link/r1"],
)
def test_the_quick_path_gives_what_resolve_gives(tmp_path: Path, user_path: str) -> None:
    # plain folders, a missing tail, a file used as a folder, and a link inside the root
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / "manifest.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "runs")
    assert resolve_inside(tmp_path, user_path) == (tmp_path / user_path).resolve()


def test_a_link_swapped_in_later_is_still_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "runs" / "r1").mkdir(parents=True)
    assert resolve_inside(root, "runs/r1") == root.resolve() / "runs" / "r1"
    (root / "runs" / "r1").rmdir()
    (root / "runs" / "r1").symlink_to(tmp_path)  # nothing about a path is remembered
    with pytest.raises(AppError) as info:
        resolve_inside(root, "runs/r1")
    assert info.value.code is ErrorCode.PATH_OUTSIDE_DATA_ROOT


def test_open_regular_reads_files_and_refuses_links_fifos_and_folders(tmp_path: Path) -> None:
    (tmp_path / "logs.jsonl").write_text("line\n", encoding="utf-8")
    assert read_regular_text(tmp_path / "logs.jsonl") == "line\n"
    outside = tmp_path / "passwd"
    outside.write_text("root:x:0:0", encoding="utf-8")
    (tmp_path / "link").symlink_to(outside)
    os.mkfifo(tmp_path / "fifo")
    for refused in ("link", "fifo", "."):
        with pytest.raises(OSError):
            open_regular(tmp_path / refused)
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "missing")


def test_id_folders_skip_and_log_every_name_that_is_no_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("tok-b", "tok-a", "with space", ".hidden"):
        (tmp_path / name).mkdir()
    os.mkdir(os.fsencode(tmp_path) + b"/bad-\xff")  # not UTF-8: os gives a surrogate escape
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    (tmp_path / "tok-link").symlink_to(tmp_path / "tok-a")
    with caplog.at_level(logging.WARNING, logger="platform_core.paths"):
        assert id_folders(tmp_path) == ["tok-a", "tok-b"]
    assert len(caplog.records) == 5
    assert all(r.__dict__["event"] == "data_root.entry_skipped" for r in caplog.records)
    assert id_folders(tmp_path / "missing") == []
