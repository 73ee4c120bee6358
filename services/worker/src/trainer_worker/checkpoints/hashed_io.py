"""Files written and read with their SHA-256 computed from the very bytes that went to (or
came from) the disk, in one pass.

Two digests are recorded, told apart by the file's record:

- `{"sha256": hex, "size": n}`: the SHA-256 of the whole file, what `sha256sum` prints.
  One core hashes it, so a disk faster than one core's SHA-256 waits for the hash.
- `{"sha256": hex, "size": n, "piece_bytes": p}`: a piece tree. The file is cut into pieces
  of `p` bytes (the last may be shorter) and `sha256` is the SHA-256 of the concatenated
  32-byte SHA-256 digests of the pieces, in order (an empty file has no pieces: the SHA-256
  of no bytes). The pieces are hashed in parallel on every core (hashlib releases the GIL
  for large buffers), so writing and verifying run at disk speed.

Checkpoint files use the piece tree; final model files the whole-file digest, which anyone
can check with standard tools. `verify_file` checks either kind.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

FileRecord = dict[str, int | str]  # {"sha256": hex, "size": bytes[, "piece_bytes": bytes]}
# Pieces of 8 MiB: large enough that each hash call runs at full speed without the GIL,
# small enough that a 100 MB file still spreads over a dozen cores.
PIECE_BYTES = 8 * 1024 * 1024
_CHUNK = PIECE_BYTES  # buffered writes and whole-file reads go in pieces of the same size
# piece sizes a record may name: outside them a read would allocate too much or hash too
# many tiny pieces, so such a record is refused
_MIN_PIECE, _MAX_PIECE = 64 * 1024, 64 * 1024 * 1024
# pieces read ahead at most: eight hashing cores outrun any single disk
_MAX_READ_BUFFERS = 10
_SMALL = 64 * 1024  # below this a thread hop costs more than hashing in place
# Hashing threads: every core this process may use, at most 16.
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
HASH_THREADS = max(1, min(16, _CORES or 1))


class _Pool:
    """One hashing pool per process, shared by the training thread, the checkpoint writer
    and inference: the jobs are pure hashing and never wait on each other. A forked child
    (RQ's work horse) gets a pool of its own: the parent's threads do not exist there."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.executor: ThreadPoolExecutor | None = None

    def get(self) -> ThreadPoolExecutor:
        with self.lock:
            if self.executor is None:
                self.executor = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="sha256")
            return self.executor

    def forget_after_fork(self) -> None:
        self.lock = threading.Lock()  # a lock held by a parent's thread stays held otherwise
        self.executor = None


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget_after_fork)


def _hash_pool() -> ThreadPoolExecutor:
    return _pool.get()


class _HashingRaw(io.RawIOBase):
    """A raw write-only file that hashes what is written to it, piece by piece. Each write
    hands its pieces to the pool, writes the bytes meanwhile, and returns once both are done
    (the caller may reuse its buffer afterwards). `piece_bytes=None` hashes the whole file as
    one piece (a whole-file digest)."""

    def __init__(self, path: Path, piece_bytes: int | None) -> None:
        super().__init__()
        self._file = path.open("wb", buffering=0)
        self._piece_bytes = piece_bytes
        self._pieces: list[hashlib._Hash] = []
        self._filled = 0  # bytes in the last piece
        self._size = 0

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._file.fileno()

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data).cast("B")
        limit = self._piece_bytes or view.nbytes + self._filled + 1
        pending: list[Future[None]] = []
        position = 0
        while position < view.nbytes:
            if not self._pieces or self._filled == limit:
                self._pieces.append(hashlib.sha256())
                self._filled = 0
            take = min(limit - self._filled, view.nbytes - position)
            segment = view[position : position + take]
            if take < _SMALL:
                self._pieces[-1].update(segment)
            else:  # each piece gets at most one segment per write: updates stay in order
                pending.append(_hash_pool().submit(self._pieces[-1].update, segment))
            self._filled += take
            position += take
        _write_all(self._file, view)
        if view.nbytes >= _CHUNK and hasattr(os, "posix_fadvise"):  # Linux; elsewhere fsync
            # start writing these pages to the disk now (asynchronously), so the disk works
            # while the next pieces are hashed and the final fsync finds little left to do
            os.posix_fadvise(self._file.fileno(), self._size, view.nbytes, os.POSIX_FADV_DONTNEED)
        for done in pending:
            done.result()
        self._size += view.nbytes
        return view.nbytes

    def close(self) -> None:
        self._file.close()
        super().close()

    def record(self) -> FileRecord:
        if self._piece_bytes is None:
            whole = self._pieces[0].hexdigest() if self._pieces else hashlib.sha256().hexdigest()
            return {"sha256": whole, "size": self._size}
        root = hashlib.sha256(b"".join(piece.digest() for piece in self._pieces))
        return {"sha256": root.hexdigest(), "size": self._size, "piece_bytes": self._piece_bytes}


def write_hashed(
    path: Path,
    fill: Callable[[BinaryIO], object],
    *,
    piece_bytes: int | None = PIECE_BYTES,
    sync: bool = True,
) -> FileRecord:
    """Create `path`, let `fill` write it, fsync it (unless `sync=False`: the caller fsyncs
    it later, with `fsync_file`); return the record (digest and size) of the very bytes
    written, computed as they went out."""
    raw = _HashingRaw(path, piece_bytes)
    with io.BufferedWriter(raw, buffer_size=_CHUNK) as out:
        fill(out)
        out.flush()
        if sync:
            os.fsync(out.fileno())
    return raw.record()


def fsync_file(path: Path) -> None:
    """Flush a file written with `sync=False` to the disk. Several files written first and
    flushed after keep the disk busy while the next file is still being serialised."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, *, piece_bytes: int | None = PIECE_BYTES) -> FileRecord:
    return write_hashed(path, lambda out: out.write(data), piece_bytes=piece_bytes)


def _write_all(handle: io.FileIO, data: memoryview) -> None:
    written = 0
    while written < data.nbytes:
        written += handle.write(data[written:]) or 0


def file_digest(path: Path, record: FileRecord) -> str | None:
    """The digest of `path` of the kind `record` names, or None when the file's size is not
    the recorded one. OSError when the file cannot be read."""
    size = int(record["size"])
    piece_bytes = record.get("piece_bytes")
    with path.open("rb", buffering=0) as handle:
        if os.fstat(handle.fileno()).st_size != size:
            return None
        if piece_bytes is None:
            return _whole_sha256(handle, size)
        if not isinstance(piece_bytes, int) or not _MIN_PIECE <= piece_bytes <= _MAX_PIECE:
            return None  # not a piece size this code writes: refused, never trusted
        return _piece_tree_sha256(handle, size, piece_bytes)


def verify_file(path: Path, record: FileRecord) -> bool:
    """Whether `path` has the recorded size and digest. OSError when it cannot be read."""
    return file_digest(path, record) == record["sha256"]


def _whole_sha256(handle: io.FileIO, size: int) -> str | None:
    """One digest: reads alternate between two buffers, one piece hashed on the pool while
    the next is read."""
    buffers = _read_buffers(2, _CHUNK)
    digest = hashlib.sha256()
    hashed: Future[None] | None = None
    total = turn = 0
    while count := handle.readinto(buffers[turn]):
        if hashed is not None:
            hashed.result()  # the other buffer is free again
        hashed = _hash_pool().submit(digest.update, buffers[turn][:count])
        total += count
        turn ^= 1
    if hashed is not None:
        hashed.result()
    return digest.hexdigest() if total == size else None


def _piece_tree_sha256(handle: io.FileIO, size: int, piece_bytes: int) -> str | None:
    """Read the pieces in order into a ring of buffers; each is hashed on the pool as soon as
    it is read, so the disk and every core work at once."""
    buffers = _read_buffers(min(HASH_THREADS + 2, _MAX_READ_BUFFERS), piece_bytes)
    free: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(buffers)):
        free.put(index)
    digests: list[bytes] = []
    pending: list[Future[None]] = []

    def hash_piece(slot: int, buffer: int, length: int) -> None:
        digests[slot] = hashlib.sha256(buffers[buffer][:length]).digest()
        free.put(buffer)

    total = 0
    while True:
        buffer = free.get()
        length = _read_full(handle, buffers[buffer][:piece_bytes])
        if length == 0:
            free.put(buffer)
            break
        digests.append(b"")
        pending.append(_hash_pool().submit(hash_piece, len(digests) - 1, buffer, length))
        total += length
    for done in pending:
        done.result()
    return hashlib.sha256(b"".join(digests)).hexdigest() if total == size else None


def _read_full(handle: io.FileIO, target: memoryview) -> int:
    """Fill `target` unless the file ends first (a piece must be exactly one piece)."""
    filled = 0
    while filled < target.nbytes:
        count = handle.readinto(target[filled:])
        if not count:
            break
        filled += count
    return filled


_local = threading.local()


def _read_buffers(count: int, nbytes: int) -> list[memoryview]:
    """Read buffers kept per thread and reused: fresh memory costs more to touch than to hash
    on a virtual machine."""
    key = (count, nbytes)
    cached: dict[tuple[int, int], list[memoryview]] = _local.__dict__.setdefault("buffers", {})
    if key not in cached:
        cached.clear()  # one set per thread at a time
        cached[key] = [memoryview(bytearray(nbytes)) for _ in range(count)]
    return cached[key]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
