"""Resuming a run: the newest checkpoint that verifies, falling back to older ones."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from platform_core.errors import AppError, ErrorCode
from trainer_worker.checkpoints import list_checkpoints, load_checkpoint
from trainer_worker.training.state import TrainState

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumePoint:
    checkpoint: Path
    state: TrainState  # the model passed in already holds the checkpoint's weights
    skipped: list[str]  # newer checkpoints that failed verification, newest first


def load_resume_point(directory: Path, model: nn.Module) -> ResumePoint | None:
    """Load the newest valid checkpoint of `directory` into `model`; None when there is none.
    Every file's hash is verified before anything is loaded; a corrupt checkpoint is logged
    and the previous one tried."""
    skipped: list[str] = []
    for checkpoint in reversed(list_checkpoints(directory)):
        try:
            state = load_checkpoint(checkpoint, model)
        except AppError as error:
            if error.code is not ErrorCode.CHECKPOINT_CORRUPT:
                raise
            _log.warning(
                "checkpoint %s is corrupt (%s); trying the previous one",
                checkpoint.name,
                error.message,
                extra={"event": "checkpoint.corrupt", "error_code": error.code.value},
            )
            skipped.append(checkpoint.name)
            continue
        return ResumePoint(checkpoint, state, skipped)
    return None
