"""Paths that users send are resolved inside the data root, or refused.

`../`, absolute paths and symlinks whose target leaves the root are all refused with one
typed error, so the API, the worker and the CLI share a single rule.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import ID_REGEX

_ID = re.compile(ID_REGEX)  # ids name folders in the data root as they appear in URLs
_log = logging.getLogger(__name__)


def resolve_inside(data_root: Path, user_path: str) -> Path:
    """Return `user_path` (relative to `data_root`) as an absolute, symlink-free path that
    lies inside `data_root`; raise PATH_OUTSIDE_DATA_ROOT otherwise. The path need not exist."""
    if not user_path or "\x00" in user_path:
        raise AppError(ErrorCode.INVALID_INPUT, "path must be a non-empty string without NUL")
    if user_path.startswith("/"):  # POSIX paths: what Path.is_absolute() says
        raise AppError(
            ErrorCode.PATH_OUTSIDE_DATA_ROOT,
            f"path {user_path!r} must be relative to the data root",
        )
    root = _resolved_root(data_root)
    # as Path would split it (no empty or "." parts), with str operations: the API checks a
    # run's folder on every poll
    parts = [part for part in user_path.split("/") if part not in ("", ".")]
    if ".." not in parts and _plain_below(str(root), parts):
        return root.joinpath(*parts)  # already what resolve() would give
    resolved = (root / user_path).resolve()
    if resolved != root and root not in resolved.parents:
        raise AppError(
            ErrorCode.PATH_OUTSIDE_DATA_ROOT,
            f"path {user_path!r} leads outside the data root",
        )
    return resolved


def exists(path: Path, *, regular_file: bool = False) -> bool:
    """Whether `path` exists (as a regular file when `regular_file`), following links. Any
    OSError reads as absent: a user's name too long for the file system (ENAMETOOLONG) cannot
    name anything that exists, and must not escape as a 500 the way `Path.exists` lets it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) if regular_file else True


@lru_cache(maxsize=8)
def _resolved_root(data_root: Path) -> Path:
    """The data root resolved once per process: services check many paths against one root
    (each resolve walks every component of the path with a system call)."""
    return data_root.resolve()


def _plain_below(root: str, parts: list[str]) -> bool:
    """Whether no component of `root/parts` is a symbolic link: then, with no `..` among
    `parts`, the joined path is already resolved. One `lstat` per component below the root,
    where `resolve()` walks the root's own components too, in Python: the API checks a run's
    folder on every poll. False (so the caller resolves) when unsure."""
    current = root
    for part in parts:
        current = f"{current}/{part}"
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return True  # the rest does not exist, so it holds no link either
        except OSError:
            return False
        if stat.S_ISLNK(mode):
            return False
    return True


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading when it is a regular file that is not a symbolic link: a
    link (even one swapped in after a check, O_NOFOLLOW), a FIFO or a device is refused
    with an OSError, so what the API serves is a file inside the data root."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer; it changes nothing for files
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_text(path: Path) -> str:
    """The UTF-8 text of a regular file (see `open_regular`); OSError or UnicodeDecodeError
    otherwise."""
    with open_regular(path) as handle:
        return handle.read().decode("utf-8")


def id_folders(folder: Path) -> list[str]:
    """The names of the sub-folders of `folder` that are valid ids, sorted; any other entry
    (an undecodable or invalid name, a link, a file) is skipped and logged. None exist ->
    []."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    names: list[str] = []
    for entry in entries:
        if _ID.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            names.append(entry.name)
        else:
            _log.warning(
                "skipping %a in %s: not a folder named by a valid id",
                entry.name,
                folder.name,
                extra={"event": "data_root.entry_skipped"},
            )
    return sorted(names)
