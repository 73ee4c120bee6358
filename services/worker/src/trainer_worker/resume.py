"""Resuming a run (or serving one still training): the newest checkpoint that verifies,
falling back to older ones. A checkpoint that fails verification is quarantined (renamed,
never deleted) and reported, so the caller can tell the user which step it resumed from and
what it set aside."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from platform_core.errors import AppError, ErrorCode
from trainer_worker.checkpoints import Quarantined, list_checkpoints, load_checkpoint, quarantine
from trainer_worker.training.state import TrainState

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumePoint:
    checkpoint: Path
    state: TrainState  # the model passed in already holds the checkpoint's weights
    skipped: list[str]  # newer checkpoints that failed verification, newest first
    quarantined: list[Quarantined] = field(default_factory=list)  # where they were moved


@dataclass(frozen=True)
class ResumeSearch:
    point: ResumePoint | None  # None: no checkpoint verified
    quarantined: list[Quarantined]  # corrupt checkpoints set aside, newest first

    @property
    def skipped(self) -> list[str]:
        return [q.name for q in self.quarantined]


def find_resume_point(
    directory: Path, model: nn.Module, *, quarantine_corrupt: bool = True
) -> ResumeSearch:
    """Load the newest valid checkpoint of `directory` into `model`. Every file's hash is
    verified before anything is loaded; a corrupt checkpoint is quarantined (or, for a reader
    that must not touch a run it does not own, only skipped) and the previous one tried."""
    found: list[Quarantined] = []
    for checkpoint in reversed(list_checkpoints(directory)):
        try:
            state = load_checkpoint(checkpoint, model)
        except AppError as error:
            if error.code is not ErrorCode.CHECKPOINT_CORRUPT:
                raise
            if not checkpoint.exists():
                continue  # pruned by the run's retention while we read it: not corrupt
            found.append(_set_aside(checkpoint, error.message, quarantine_corrupt))
            continue
        point = ResumePoint(checkpoint, state, [q.name for q in found], found)
        return ResumeSearch(point, found)
    return ResumeSearch(None, found)


def load_resume_point(directory: Path, model: nn.Module) -> ResumePoint | None:
    """`find_resume_point`'s checkpoint; None when none verifies (the corrupt ones are
    quarantined either way)."""
    return find_resume_point(directory, model).point


def _set_aside(checkpoint: Path, reason: str, move: bool) -> Quarantined:
    if move:
        try:
            return quarantine(checkpoint, reason)
        except FileNotFoundError:
            pass  # gone meanwhile (pruned): nothing left to set aside
    _log.warning(
        "checkpoint %s is corrupt (%s); trying the previous one",
        checkpoint.name,
        reason,
        extra={"event": "checkpoint.corrupt", "error_code": ErrorCode.CHECKPOINT_CORRUPT.value},
    )
    return Quarantined(checkpoint.name, checkpoint.name, reason)
