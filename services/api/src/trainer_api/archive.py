"""A folder as a streamed tar.gz, written as it is sent: memory stays at one read block
however large the checkpoints are, and the first bytes leave before the last file is read.

Only regular files and folders go in. Symbolic links are left out, so a link planted in a
run folder cannot carry a file from outside the data root into the download.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from platform_core.errors import AppError, ErrorCode
from platform_core.paths import open_regular

# Weights barely compress; level 1 keeps a multi-GB checkpoint from taking minutes of CPU
# while still shrinking JSON, logs and vocabularies several times.
COMPRESS_LEVEL = 1
_READ_BLOCK = 1024 * 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # deflate with a gzip header and trailer


def tar_gz(folder: Path, root_name: str) -> Iterator[bytes]:
    """The tar.gz of `folder`, its members under `root_name/`, in compressed chunks."""
    deflate = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    written = 0
    for chunk in _tar_blocks(folder, root_name):
        written += len(chunk)
        compressed = deflate.compress(chunk)
        if compressed:
            yield compressed
    # end of archive: two zero blocks, padded to a whole record as tar readers expect
    ending = bytes(2 * tarfile.BLOCKSIZE)
    written += len(ending)
    ending += bytes(-written % tarfile.RECORDSIZE)
    yield deflate.compress(ending) + deflate.flush()


def _tar_blocks(folder: Path, root_name: str) -> Iterator[bytes]:
    for path, arcname in _members(folder, root_name):
        info = path.lstat()
        member = tarfile.TarInfo(arcname)
        member.mtime = int(info.st_mtime)
        if stat.S_ISDIR(info.st_mode):
            member.type, member.mode = tarfile.DIRTYPE, 0o755
            yield member.tobuf(tarfile.PAX_FORMAT)
            continue
        member.size, member.mode = info.st_size, 0o644
        yield member.tobuf(tarfile.PAX_FORMAT)
        yield from _file_blocks(path, info.st_size)


def _members(folder: Path, root_name: str) -> Iterator[tuple[Path, str]]:
    """Folders and regular files under `folder`, sorted, symbolic links left out."""
    yield folder, root_name
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not (Path(current) / d).is_symlink())
        base = Path(current)
        relative = base.relative_to(folder)
        for name in dirs:
            yield base / name, f"{root_name}/{(relative / name).as_posix()}"
        for name in sorted(files):
            path = base / name
            if path.is_file() and not path.is_symlink():
                yield path, f"{root_name}/{(relative / name).as_posix()}"


def _file_blocks(path: Path, size: int) -> Iterator[bytes]:
    """Exactly `size` bytes of `path` (the size its header announced), then the padding to a
    whole tar block. A file that a running job appends to is cut at that size."""
    remaining = size
    with open_regular(path) as handle:  # a link swapped in since the walk is refused
        while remaining > 0:
            block = handle.read(min(_READ_BLOCK, remaining))
            if not block:  # shrank since its header went out: the archive cannot be finished
                raise AppError(ErrorCode.INTERNAL, f"{path.name} changed while it was archived")
            remaining -= len(block)
            yield block
    yield bytes(-size % tarfile.BLOCKSIZE)
