"""Checkpoint folders on disk: written so that no partial checkpoint is ever visible,
verified before any byte is trusted, and set aside (never deleted) when found corrupt.

A checkpoint is a folder `checkpoints/step-NNNNNNNN/` holding `model.safetensors`,
`train_state.pt` (plain tensors and scalars, read back with `weights_only=True`) and
`meta.json` (step, eval loss, each file's size and digest, see `hashed_io`). It is written
under a temporary name, each file streamed to disk in one pass with its digest computed from
the very bytes written, fsynced, renamed into place, and the parent folder fsynced. Loading
verifies every file first, then maps the files: weights are copied from the page cache
straight into the model, never through an intermediate copy. `index.json` beside the
checkpoints lists every one with its step, metric, size and digest.

A checkpoint that fails verification is quarantined: renamed to
`step-NNNNNNNN.corrupt-<UTC time>`, out of every listing, kept for an operator to inspect
(`trainctl cleanup --corrupt` removes it).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn
from torch.utils.serialization import config as serialization_config

from platform_core.errors import AppError, ErrorCode
from platform_core.manifests import write_atomic
from trainer_worker.checkpoints import hashed_io
from trainer_worker.checkpoints.hashed_io import FileRecord
from trainer_worker.checkpoints.model_file import load_model_file
from trainer_worker.checkpoints.safetensors_format import write_safetensors
from trainer_worker.checkpoints.snapshot import Snapshot, snapshot
from trainer_worker.training.state import TrainState

_log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
META_FILE = "meta.json"
INDEX_FILE = "index.json"
_PREFIX = "step-"
_PUBLISHED = re.compile(r"step-\d+")
_QUARANTINED = re.compile(r"step-\d+\.corrupt-.+")


@dataclass(frozen=True)
class CheckpointMeta:
    step: int
    eval_loss: float | None
    files: dict[str, FileRecord]  # name -> {"sha256": hex, "size": bytes[, "piece_bytes"]}
    created_at: float = 0.0

    @property
    def size_bytes(self) -> int:
        return sum(int(f["size"]) for f in self.files.values())

    @property
    def name(self) -> str:
        return checkpoint_name(self.step)

    @property
    def model_sha256(self) -> str:
        """The weights file's recorded digest (the one events and the index carry)."""
        return str(self.files[MODEL_FILE]["sha256"])


@dataclass(frozen=True)
class Quarantined:
    """A checkpoint that failed verification and was set aside; what callers report."""

    name: str  # e.g. step-00000300
    moved_to: str  # e.g. step-00000300.corrupt-20261204T135000Z
    reason: str  # the verification failure


def checkpoint_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


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
        # both files written first, flushed after: the weights go to the disk while the
        # training state is still being serialised
        files = {
            MODEL_FILE: write_safetensors(tmp / MODEL_FILE, snap.tensors, snap.aliases, sync=False),
            STATE_FILE: hashed_io.write_hashed(tmp / STATE_FILE, _save_state(snap), sync=False),
        }
        for name in files:
            hashed_io.fsync_file(tmp / name)
        meta = CheckpointMeta(snap.step, eval_loss, files, created_at=time.time())
        hashed_io.write_file(tmp / META_FILE, json.dumps(asdict(meta), indent=2).encode())
        hashed_io.fsync_dir(tmp)
        if final.exists():  # the same step saved twice (a final save after an interval one)
            shutil.rmtree(final)
        os.replace(tmp, final)
        hashed_io.fsync_dir(directory)
        write_index(directory)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        code = ErrorCode.STORAGE_FULL if exc.errno == errno.ENOSPC else ErrorCode.TRAINING_FAILED
        raise AppError(
            code, f"could not write checkpoint at step {snap.step}: {exc.strerror}"
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _save_state(snap: Snapshot) -> Callable[[BinaryIO], None]:
    """`torch.save` of the training state into the hashing file, without the zip format's
    CRC-32 of each record: computed on one core at about 0.5 GB/s it was the slowest step of
    a save, and the file's own SHA-256 already covers every byte. Such files load as usual."""

    def fill(out: BinaryIO) -> None:
        previous = serialization_config.save.compute_crc32
        serialization_config.save.compute_crc32 = False
        try:
            torch.save(snap.state, out)
        finally:
            serialization_config.save.compute_crc32 = previous

    return fill


def read_meta(checkpoint: Path) -> CheckpointMeta:
    try:
        raw = json.loads((checkpoint / META_FILE).read_text(encoding="utf-8"))
        return CheckpointMeta(**raw)
    except (OSError, ValueError, TypeError) as exc:
        raise AppError(ErrorCode.CHECKPOINT_CORRUPT, f"{checkpoint.name}: unreadable meta") from exc


def verify_checkpoint(checkpoint: Path) -> CheckpointMeta:
    """Hash every file of the checkpoint and check it against its meta; CHECKPOINT_CORRUPT on
    any mismatch, size change or missing file. Checkpoints written before pieces were hashed
    in parallel carry whole-file digests and verify as such."""
    meta = read_meta(checkpoint)
    for name, record in meta.files.items():
        try:
            matches = hashed_io.verify_file(checkpoint / name, record)
        except (OSError, KeyError, ValueError) as exc:
            raise AppError(
                ErrorCode.CHECKPOINT_CORRUPT, f"{checkpoint.name}/{name}: unreadable"
            ) from exc
        if not matches:
            raise AppError(ErrorCode.CHECKPOINT_CORRUPT, f"{checkpoint.name}/{name}: hash mismatch")
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
    """Published checkpoints, oldest first (temporary and quarantined folders are never
    listed)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and _PUBLISHED.fullmatch(p.name))


def list_quarantined(directory: Path) -> list[Path]:
    """Checkpoints set aside as corrupt, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _QUARANTINED.fullmatch(p.name))


def quarantine(checkpoint: Path, reason: str) -> Quarantined:
    """Rename a corrupt checkpoint out of the listings (never delete it), rewrite the index,
    log it; return what happened for the caller to report."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = checkpoint.with_name(f"{checkpoint.name}.corrupt-{stamp}")
    suffix = 1
    while target.exists():  # two quarantines of one step within a second
        target = checkpoint.with_name(f"{checkpoint.name}.corrupt-{stamp}-{suffix}")
        suffix += 1
    os.replace(checkpoint, target)
    hashed_io.fsync_dir(checkpoint.parent)
    write_index(checkpoint.parent)
    _log.warning(
        "checkpoint %s is corrupt (%s); moved to %s",
        checkpoint.name,
        reason,
        target.name,
        extra={
            "event": "checkpoint.quarantined",
            "error_code": ErrorCode.CHECKPOINT_CORRUPT.value,
            "checkpoint": checkpoint.name,
        },
    )
    return Quarantined(checkpoint.name, target.name, reason)


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
            "sha256": e.model_sha256,
            "piece_bytes": e.files[MODEL_FILE].get("piece_bytes"),
            "created_at": e.created_at,
        }
        for e in entries
    ]
    write_atomic(directory / INDEX_FILE, json.dumps(rows, indent=2).encode())
    return entries
