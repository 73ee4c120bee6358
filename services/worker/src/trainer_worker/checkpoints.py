"""Checkpoints on disk: weights in safetensors, the training state beside them, written so
that no partial checkpoint is ever visible, and verified before any byte is trusted.

A checkpoint is a folder `checkpoints/step-NNNNNNNN/` holding `model.safetensors`,
`train_state.pt` (plain tensors and scalars, read back with `weights_only=True`) and
`meta.json` (step, eval loss, the SHA-256 and size of each file). It is written under a
temporary name, streamed to disk in one pass with each file's SHA-256 computed from the very
bytes written (hashing overlaps the writes on a helper thread), fsynced, renamed into place,
and the parent folder fsynced. Loading hashes every file first (each piece hashed while the
next is read, through two reused buffers), then maps the files: weights are copied from the
page cache straight into the model, never through an intermediate copy.
`index.json` beside the checkpoints lists every one with its step, metric, size and hash.

Saving can run in the background: `snapshot` copies the weights and optimizer state to CPU
memory (the only part that blocks training) and `CheckpointWriter` serialises and writes it
on its own thread.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Self

import torch
from torch import nn

from platform_core.errors import AppError, ErrorCode
from trainer_worker.training.state import TrainState

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
META_FILE = "meta.json"
INDEX_FILE = "index.json"
_PREFIX = "step-"
_CHUNK = 8 * 1024 * 1024  # read and hash in 8 MiB pieces: large enough for full disk speed
_ENOSPC = 28
# safetensors' names of the dtypes a model or optimizer holds
_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_DTYPES = {name: dtype for dtype, name in _DTYPE_NAMES.items()}
FileRecord = dict[str, int | str]  # {"sha256": hex, "size": bytes}


@dataclass(frozen=True)
class CheckpointMeta:
    step: int
    eval_loss: float | None
    files: dict[str, dict[str, int | str]]  # name -> {"sha256": hex, "size": bytes}
    created_at: float = 0.0

    @property
    def size_bytes(self) -> int:
        return sum(int(f["size"]) for f in self.files.values())

    @property
    def name(self) -> str:
        return checkpoint_name(self.step)


@dataclass(frozen=True)
class Snapshot:
    """A checkpoint's content copied off the live model and optimizer (CPU memory)."""

    step: int
    tensors: dict[str, torch.Tensor]  # unique weights; tied ones listed in `aliases`
    aliases: dict[str, str]  # name -> the name whose tensor it shares
    state: dict[str, object]  # TrainState.state_dict() with every tensor copied


def checkpoint_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def snapshot(model: nn.Module, state: TrainState, *, reuse: Snapshot | None = None) -> Snapshot:
    """Copy what a checkpoint needs to CPU memory, so training can go on while it is written.
    `reuse`, an earlier snapshot whose write has finished, lends its buffers: each tensor of
    the same shape and dtype is refilled in place, which costs a fraction of allocating and
    first touching fresh memory (a second or more per GB on a virtual machine)."""
    weights, aliases = _unique_tensors(model)
    previous = reuse.tensors if reuse is not None else {}
    tensors = {name: _copy_into(previous.get(name), t) for name, t in weights.items()}
    old_state = reuse.state if reuse is not None else {}
    state_copy = {k: _copy_tree(v, old_state.get(k)) for k, v in state.state_dict().items()}
    return Snapshot(state.step, tensors, aliases, state_copy)


def _unique_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's weights (detached, where they live), tied ones (GPT-2's embedding and
    head) once, plus the names that alias them."""
    first_name: dict[tuple[int, int], str] = {}
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in first_name:
            aliases[name] = first_name[key]
            continue
        first_name[key] = name
        tensors[name] = tensor.detach()
    return tensors, aliases


def _copy_into(buffer: object, value: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy of `value`: into `buffer` when it fits, else a new tensor."""
    if (
        isinstance(buffer, torch.Tensor)
        and buffer.shape == value.shape
        and buffer.dtype == value.dtype
    ):
        return buffer.copy_(value)
    return value.detach().to("cpu", copy=True).contiguous()


def _copy_tree(value: object, previous: object) -> object:
    if isinstance(value, torch.Tensor):
        return _copy_into(previous, value)
    if isinstance(value, dict):
        old = previous if isinstance(previous, dict) else {}
        return {k: _copy_tree(v, old.get(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        olds = list(previous) if isinstance(previous, list | tuple) else []
        olds += [None] * (len(value) - len(olds))
        return type(value)(_copy_tree(v, o) for v, o in zip(value, olds, strict=False))
    return value


def write_model(path: Path, model: nn.Module) -> FileRecord:
    """Write the model's weights to `path` as safetensors, atomically; return its record."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        record = _write_safetensors(tmp, *_unique_tensors(model))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return record


def load_model_file(model: nn.Module, path: Path) -> None:
    """Load a safetensors file written by `write_model` (or a checkpoint's) into `model`,
    copying each tensor from the mapped file into the model's own memory."""
    try:
        with path.open("rb") as handle:
            # a private mapping: writable for torch.frombuffer, never written back
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    except ValueError as exc:  # an empty file cannot be mapped
        raise AppError(ErrorCode.CHECKPOINT_CORRUPT, f"{path.name}: empty") from exc
    _load_weights(model, mapped)  # the mapping closes when its last tensor view is gone


def _load_weights(model: nn.Module, data: bytearray | mmap.mmap) -> None:
    """Load safetensors bytes (as `write_model` or a checkpoint wrote them) into `model`;
    the tensors view `data` until `load_state_dict` copies them in."""
    tensors, metadata = _parse_safetensors(data)
    aliases: dict[str, str] = json.loads(metadata.get("aliases", "{}"))
    for alias, original in aliases.items():
        tensors[alias] = tensors[original]
    model.load_state_dict(tensors, strict=True)


def save_checkpoint(
    directory: Path, model: nn.Module, state: TrainState, *, eval_loss: float | None
) -> CheckpointMeta:
    """Snapshot and write synchronously."""
    return write_snapshot(directory, snapshot(model, state), eval_loss=eval_loss)


def write_snapshot(directory: Path, snap: Snapshot, *, eval_loss: float | None) -> CheckpointMeta:
    """Write `directory/step-N/` atomically and record it in the index."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / checkpoint_name(snap.step)
    tmp = directory / f".{final.name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        files = {
            MODEL_FILE: _write_safetensors(tmp / MODEL_FILE, snap.tensors, snap.aliases),
            STATE_FILE: _write_torch(tmp / STATE_FILE, snap.state),
        }
        meta = CheckpointMeta(snap.step, eval_loss, files, created_at=time.time())
        _write_file(tmp / META_FILE, json.dumps(asdict(meta), indent=2).encode())
        _fsync_dir(tmp)
        if final.exists():  # the same step saved twice (a final save after an interval one)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(directory)
        write_index(directory)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        code = ErrorCode.STORAGE_FULL if exc.errno == _ENOSPC else ErrorCode.TRAINING_FAILED
        raise AppError(
            code, f"could not write checkpoint at step {snap.step}: {exc.strerror}"
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def read_meta(checkpoint: Path) -> CheckpointMeta:
    try:
        raw = json.loads((checkpoint / META_FILE).read_text(encoding="utf-8"))
        return CheckpointMeta(**raw)
    except (OSError, ValueError, TypeError) as exc:
        raise AppError(ErrorCode.CHECKPOINT_CORRUPT, f"{checkpoint.name}: unreadable meta") from exc


def verify_checkpoint(checkpoint: Path) -> CheckpointMeta:
    """Hash every file of the checkpoint and check it against its meta; CHECKPOINT_CORRUPT on
    any mismatch, size change or missing file. One pass per file through two reused buffers,
    each piece hashed on a helper thread while the next is read."""
    meta = read_meta(checkpoint)
    with _Hasher() as hasher:
        for name, record in meta.files.items():
            try:
                digest = _sha256_of(checkpoint / name, int(record["size"]), hasher)
            except OSError as exc:
                raise AppError(
                    ErrorCode.CHECKPOINT_CORRUPT, f"{checkpoint.name}/{name}: unreadable"
                ) from exc
            if digest != record["sha256"]:
                raise AppError(
                    ErrorCode.CHECKPOINT_CORRUPT, f"{checkpoint.name}/{name}: hash mismatch"
                )
    return meta


def load_checkpoint(checkpoint: Path, model: nn.Module) -> TrainState:
    """Verify, load the weights into `model`, return the TrainState. After the hash pass the
    files are mapped, not read again into fresh memory: the weights are copied from the page
    cache straight into the model, the training state's tensors stay file-backed until the
    optimizer takes them. (Published checkpoints are never rewritten in place, so the bytes
    mapped are the bytes verified.)"""
    verify_checkpoint(checkpoint)
    load_model_file(model, checkpoint / MODEL_FILE)
    try:
        raw_state = torch.load(checkpoint / STATE_FILE, mmap=True, weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise AppError(
            ErrorCode.CHECKPOINT_CORRUPT, f"{checkpoint.name}/{STATE_FILE}: unreadable ({exc})"
        ) from exc
    return TrainState.from_state_dict(raw_state)


def list_checkpoints(directory: Path) -> list[Path]:
    """Published checkpoints, oldest first (temporary folders are never listed)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and p.name.startswith(_PREFIX))


def write_index(directory: Path) -> list[CheckpointMeta]:
    """Rewrite `index.json` from the checkpoints on disk (atomically); return the entries.
    A checkpoint whose meta is unreadable is left out of the index."""
    entries: list[CheckpointMeta] = []
    for checkpoint in list_checkpoints(directory):
        try:
            entries.append(read_meta(checkpoint))
        except AppError:
            continue
    rows = [
        {
            "name": e.name,
            "step": e.step,
            "eval_loss": e.eval_loss,
            "size_bytes": e.size_bytes,
            "sha256": e.files[MODEL_FILE]["sha256"],
            "created_at": e.created_at,
        }
        for e in entries
    ]
    tmp = directory / f".{INDEX_FILE}.{uuid.uuid4().hex}.tmp"
    _write_file(tmp, json.dumps(rows, indent=2).encode())
    os.replace(tmp, directory / INDEX_FILE)
    return entries


class CheckpointWriter:
    """Writes snapshots on a background thread, one at a time. Submitting while a write is
    still going waits for it (at most one snapshot is held in memory); a failed write
    surfaces at the next `submit` or `wait`."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._last: Snapshot | None = None  # written; its buffers are refilled by `snapshot`

    def snapshot(self, model: nn.Module, state: TrainState) -> Snapshot:
        """Wait for the write in flight, then copy the model and state into the buffers of
        the last snapshot written (allocated once per run, not once per checkpoint)."""
        self.wait()
        return snapshot(model, state, reuse=self._last)

    def submit(
        self,
        directory: Path,
        snap: Snapshot,
        *,
        eval_loss: float | None,
        on_written: Callable[[CheckpointMeta], None],
    ) -> None:
        """Write `snap` in the background; from now on its buffers belong to the writer."""
        self.wait()
        self._last = snap

        def work() -> None:
            try:
                on_written(write_snapshot(directory, snap, eval_loss=eval_loss))
            except BaseException as exc:  # handed to the training thread at its next call
                self._error = exc

        self._thread = threading.Thread(target=work, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _write_file(path: Path, data: bytes) -> FileRecord:
    return _write_hashed(path, lambda out: out.write(data))


def _write_safetensors(
    path: Path, tensors: dict[str, torch.Tensor], aliases: dict[str, str]
) -> FileRecord:
    """The safetensors layout written by hand, so the tensors' bytes stream from their own
    memory to the file (no serialised copy): 8-byte header length, JSON header padded with
    spaces to a multiple of 8, then each tensor's bytes."""
    header: dict[str, object] = {"__metadata__": {"aliases": json.dumps(aliases)}}
    views: list[memoryview] = []
    offset = 0
    for name, tensor in tensors.items():
        if tensor.dtype not in _DTYPE_NAMES:
            raise AppError(ErrorCode.TRAINING_FAILED, f"cannot save {name} of dtype {tensor.dtype}")
        view = _tensor_bytes(tensor)
        header[name] = {
            "dtype": _DTYPE_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + view.nbytes],
        }
        views.append(view)
        offset += view.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)

    def fill(out: BinaryIO) -> None:
        out.write(len(encoded).to_bytes(8, "little") + encoded)
        for view in views:
            out.write(view)

    return _write_hashed(path, fill)


def _write_torch(path: Path, state: dict[str, object]) -> FileRecord:
    """`torch.save` streamed straight into the hashing file."""
    return _write_hashed(path, lambda out: torch.save(state, out))


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without a copy."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().data.cast("B")


def _parse_safetensors(
    data: bytearray | mmap.mmap,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors viewing `data` (no copy) and the metadata of a safetensors buffer."""
    try:
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(bytes(data[8 : 8 + header_len]))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        raw_metadata = header.pop("__metadata__", {})
        start = 8 + header_len
        tensors = {name: _view_tensor(data, start, record) for name, record in header.items()}
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise AppError(ErrorCode.CHECKPOINT_CORRUPT, f"unreadable safetensors: {exc}") from exc
    metadata = raw_metadata if isinstance(raw_metadata, dict) else {}
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def _view_tensor(data: bytearray | mmap.mmap, start: int, record: object) -> torch.Tensor:
    if not isinstance(record, dict):
        raise TypeError("tensor entry is not an object")
    dtype = _DTYPES[str(record["dtype"])]
    begin, end = (int(v) for v in record["data_offsets"])
    shape = [int(v) for v in record["shape"]]
    if not start <= start + begin <= start + end <= len(data):
        raise ValueError("tensor bytes lie outside the file")
    if end == begin:
        return torch.empty(shape, dtype=dtype)
    raw = torch.frombuffer(data, dtype=torch.uint8, count=end - begin, offset=start + begin)
    return raw.view(dtype).reshape(shape)


class _Hasher:
    """One helper thread that hashes pieces while the caller reads or writes the next one
    (hashlib and file I/O both release the GIL for large buffers)."""

    def __enter__(self) -> Self:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pool.shutdown(wait=True)

    def update(self, digest: hashlib._Hash, piece: memoryview) -> Future[None]:
        return self._pool.submit(digest.update, piece)


class _HashingRaw(io.RawIOBase):
    """A raw write-only file that computes the SHA-256 of the bytes written to it. Large
    writes are cut into pieces, each hashed on the helper thread while it is written."""

    def __init__(self, path: Path, hasher: _Hasher) -> None:
        super().__init__()
        self._file = path.open("wb", buffering=0)
        self._hasher = hasher
        self._digest = hashlib.sha256()
        self._size = 0

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._file.fileno()

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data).cast("B")
        if view.nbytes < _CHUNK:  # small records: not worth a thread hop
            self._digest.update(view)
            _write_all(self._file, view)
        else:
            for begin in range(0, view.nbytes, _CHUNK):
                piece = view[begin : begin + _CHUNK]
                hashed = self._hasher.update(self._digest, piece)
                _write_all(self._file, piece)
                hashed.result()
        self._size += view.nbytes
        return view.nbytes

    def close(self) -> None:
        self._file.close()
        super().close()

    def record(self) -> FileRecord:
        return {"sha256": self._digest.hexdigest(), "size": self._size}


def _write_hashed(path: Path, fill: Callable[[BinaryIO], object]) -> FileRecord:
    """Create `path`, let `fill` write it, fsync it; return the SHA-256 and size of the very
    bytes written, computed as they went out."""
    with _Hasher() as hasher:
        raw = _HashingRaw(path, hasher)
        with io.BufferedWriter(raw, buffer_size=_CHUNK) as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
    return raw.record()


def _write_all(handle: io.FileIO, data: memoryview) -> None:
    written = 0
    while written < data.nbytes:
        written += handle.write(data[written:]) or 0


def _sha256_of(path: Path, size: int, hasher: _Hasher) -> str | None:
    """The file's SHA-256, or None when its size is not `size`. Reads alternate between the
    thread's two buffers, so one piece is hashed while the next is read."""
    buffers = _read_buffers()
    digest = hashlib.sha256()
    hashed: Future[None] | None = None
    total = turn = 0
    with path.open("rb", buffering=0) as handle:
        if os.fstat(handle.fileno()).st_size != size:
            return None
        while count := handle.readinto(buffers[turn]):
            if hashed is not None:
                hashed.result()  # the other buffer is free again
            hashed = hasher.update(digest, buffers[turn][:count])
            total += count
            turn ^= 1
    if hashed is not None:
        hashed.result()
    return digest.hexdigest() if total == size else None


_local = threading.local()


def _read_buffers() -> tuple[memoryview, memoryview]:
    """Two 8 MiB buffers per thread, allocated once: fresh memory costs more to touch than
    to hash on a virtual machine."""
    buffers: tuple[memoryview, memoryview] | None = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = (memoryview(bytearray(_CHUNK)), memoryview(bytearray(_CHUNK)))
        _local.buffers = buffers
    return buffers


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
