"""Checkpoints and model files on disk, one concept per module:

- `snapshot`: copying a checkpoint's content off the live model (the part that blocks training)
- `safetensors_format`: the safetensors layout, written and read without intermediate copies
- `hashed_io`: files written and verified with their SHA-256 in one pass, pieces in parallel
- `store`: checkpoint folders: atomic writes, verification, listing, the index, quarantine
- `writer`: the background thread that writes snapshots while training goes on
- `model_file`: the final model file, its SHA-256, and verification before inference
"""

from trainer_worker.checkpoints.hashed_io import FileRecord
from trainer_worker.checkpoints.model_file import load_model_file, verify_model_file, write_model
from trainer_worker.checkpoints.snapshot import Snapshot, snapshot
from trainer_worker.checkpoints.store import (
    INDEX_FILE,
    META_FILE,
    MODEL_FILE,
    STATE_FILE,
    CheckpointMeta,
    Quarantined,
    checkpoint_name,
    list_checkpoints,
    list_quarantined,
    load_checkpoint,
    quarantine,
    read_meta,
    save_checkpoint,
    verify_checkpoint,
    write_index,
    write_snapshot,
)
from trainer_worker.checkpoints.writer import CheckpointWriter

__all__ = [
    "INDEX_FILE",
    "META_FILE",
    "MODEL_FILE",
    "STATE_FILE",
    "CheckpointMeta",
    "CheckpointWriter",
    "FileRecord",
    "Quarantined",
    "Snapshot",
    "checkpoint_name",
    "list_checkpoints",
    "list_quarantined",
    "load_checkpoint",
    "load_model_file",
    "quarantine",
    "read_meta",
    "save_checkpoint",
    "snapshot",
    "verify_checkpoint",
    "verify_model_file",
    "write_index",
    "write_model",
    "write_snapshot",
]
