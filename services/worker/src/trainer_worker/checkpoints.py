"""Checkpoints on disk: weights in safetensors, the training state beside them, written so
that no partial checkpoint is ever visible, and verified before any byte is trusted.

A checkpoint is a folder `checkpoints/step-NNNNNNNN/` holding `model.safetensors`,
`train_state.pt` (plain tensors and scalars, read back with `weights_only=True`) and
`meta.json` (step, eval loss, the SHA-256 and size of each file). It is written under a
temporary name, each file's hash computed from the very bytes written, fsynced, renamed into
place, and the parent folder fsynced. `index.json` beside the checkpoints lists every one with
its step, metric, size and hash.

Saving can run in the background: `snapshot` copies the weights and optimizer state to CPU
memory (the only part that blocks training) and `CheckpointWriter` serialises and writes it
on its own thread.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from platform_core.errors import AppError, ErrorCode
from trainer_worker.training.state import TrainState

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
META_FILE = "meta.json"
INDEX_FILE = "index.json"
_PREFIX = "step-"
_CHUNK = 8 * 1024 * 1024  # read and hash in 8 MiB pieces: large enough for full disk speed
_ENOSPC = 28


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


def snapshot(model: nn.Module, state: TrainState) -> Snapshot:
    """Copy what a checkpoint needs, so training can go on while it is written."""
    tensors, aliases = _unique_tensors(model, copy=True)
    state_copy = {key: _copy_tree(value) for key, value in state.state_dict().items()}
    return Snapshot(state.step, tensors, aliases, state_copy)


def _unique_tensors(
    model: nn.Module, *, copy: bool
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's weights on the CPU, tied ones (GPT-2's embedding and head) once, plus the
    names that alias them."""
    first_name: dict[tuple[int, int], str] = {}
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in first_name:
            aliases[name] = first_name[key]
            continue
        first_name[key] = name
        tensors[name] = tensor.detach().to("cpu", copy=copy).contiguous()
    return tensors, aliases


def _copy_tree(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _copy_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copy_tree(v) for v in value)
    return value


def model_bytes(model: nn.Module) -> bytes:
    """The model's weights as safetensors bytes."""
    return _safetensors_bytes(*_unique_tensors(model, copy=False))


def _safetensors_bytes(tensors: dict[str, torch.Tensor], aliases: dict[str, str]) -> bytes:
    return save_safetensors(tensors, metadata={"aliases": json.dumps(aliases)})


def load_model_bytes(model: nn.Module, data: bytes) -> None:
    tensors = load_safetensors(data)
    aliases: dict[str, str] = json.loads(_safetensors_metadata(data).get("aliases", "{}"))
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
        buffer = io.BytesIO()
        torch.save(snap.state, buffer)
        files = {
            MODEL_FILE: _write_file(
                tmp / MODEL_FILE, _safetensors_bytes(snap.tensors, snap.aliases)
            ),
            STATE_FILE: _write_file(tmp / STATE_FILE, buffer.getvalue()),
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


def read_verified(checkpoint: Path) -> dict[str, bytes]:
    """Every file of the checkpoint, each hashed while it is read (one pass) and checked
    against its meta; CHECKPOINT_CORRUPT on any mismatch or missing file."""
    meta = read_meta(checkpoint)
    payload: dict[str, bytes] = {}
    for name, record in meta.files.items():
        digest = hashlib.sha256()
        data = bytearray()
        try:
            with (checkpoint / name).open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                    data += chunk
        except OSError as exc:
            raise AppError(
                ErrorCode.CHECKPOINT_CORRUPT, f"{checkpoint.name}/{name}: unreadable"
            ) from exc
        if digest.hexdigest() != record["sha256"] or len(data) != record["size"]:
            raise AppError(ErrorCode.CHECKPOINT_CORRUPT, f"{checkpoint.name}/{name}: hash mismatch")
        payload[name] = bytes(data)
    return payload


def load_checkpoint(checkpoint: Path, model: nn.Module) -> TrainState:
    """Verify, load the weights into `model`, return the TrainState."""
    payload = read_verified(checkpoint)
    load_model_bytes(model, payload[MODEL_FILE])
    raw_state = torch.load(io.BytesIO(payload[STATE_FILE]), weights_only=True)
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

    def submit(
        self,
        directory: Path,
        snap: Snapshot,
        *,
        eval_loss: float | None,
        on_written: Callable[[CheckpointMeta], None],
    ) -> None:
        self.wait()

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


def _write_file(path: Path, data: bytes) -> dict[str, int | str]:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    header_len = int.from_bytes(data[:8], "little")
    header: dict[str, object] = json.loads(data[8 : 8 + header_len])
    metadata = header.get("__metadata__", {})
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
