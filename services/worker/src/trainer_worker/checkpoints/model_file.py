"""A run's final model file (`model/model.safetensors`): written atomically with the SHA-256
of the whole file, and verified against that digest before inference trusts it.

The digest is the plain SHA-256 of the file (what `sha256sum` prints), so the run's manifest
can record it and an operator can check it with standard tools. Verifying hashes the whole
file; a result is remembered per (path, mtime_ns, size), so a server answering many requests
hashes an unchanged file once, and a file replaced or rewritten is hashed again.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path

from torch import nn

from platform_core.errors import AppError, ErrorCode
from trainer_worker.checkpoints import hashed_io
from trainer_worker.checkpoints.hashed_io import FileRecord
from trainer_worker.checkpoints.safetensors_format import load_weights, map_file, write_safetensors
from trainer_worker.checkpoints.snapshot import unique_tensors

_log = logging.getLogger(__name__)

_verified_lock = threading.Lock()
# (path, mtime_ns, size) -> the SHA-256 found when that version of the file was hashed
_verified: dict[tuple[str, int, int], str] = {}
_VERIFIED_MAX = 1024  # entries: far more model files than a worker serves at once


def write_model(path: Path, model: nn.Module) -> FileRecord:
    """Write the model's weights to `path` as safetensors, atomically; return its record
    (`{"sha256": whole-file SHA-256, "size": bytes}`) for the caller to record."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        record = write_safetensors(tmp, *unique_tensors(model), piece_bytes=None)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    hashed_io.fsync_dir(path.parent)
    _remember(path, str(record["sha256"]))
    return record


def verify_model_file(path: Path, expected_sha256: str) -> None:
    """Check that `path` is the file whose SHA-256 was recorded; CHECKPOINT_CORRUPT when it
    is not (or cannot be read). An unchanged file already verified is not hashed again."""
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        with _verified_lock:
            known = _verified.get(key)
        digest = known or hashed_io.file_digest(path, {"sha256": "", "size": stat.st_size})
    except OSError as exc:
        raise AppError(ErrorCode.CHECKPOINT_CORRUPT, f"{path.name}: unreadable") from exc
    if digest != expected_sha256:
        _log.error(
            "model file %s does not match its recorded SHA-256",
            path.name,
            extra={"event": "model.corrupt", "error_code": ErrorCode.CHECKPOINT_CORRUPT.value},
        )
        raise AppError(
            ErrorCode.CHECKPOINT_CORRUPT, f"{path.name}: hash mismatch (the file is damaged)"
        )
    if known is None and digest is not None:
        with _verified_lock:
            if len(_verified) >= _VERIFIED_MAX:
                _verified.clear()
            _verified[key] = digest


def _remember(path: Path, digest: str) -> None:
    """The file just written hashes to `digest`: no need to read it back to verify it."""
    stat = path.stat()
    with _verified_lock:
        _verified[(str(path.resolve()), stat.st_mtime_ns, stat.st_size)] = digest


def load_model_file(model: nn.Module, path: Path) -> None:
    """Load a safetensors file written by `write_model` (or a checkpoint's) into `model`,
    copying each tensor from the mapped file into the model's own memory."""
    load_weights(model, map_file(path))  # the mapping closes when its last view is gone
