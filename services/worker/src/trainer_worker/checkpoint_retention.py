"""Which checkpoints a run keeps, and making room on disk before a write.

The policy (`RetentionSpec`) keeps the newest `keep_last_n` (resume points), the best
`keep_best_k` by eval loss, and, when `max_total_size_gb` is set, drops the oldest of the rest
until the kept ones fit. Before each write the size of the new checkpoint is estimated; when
the free disk left after it would fall under `min_free_disk_fraction`, checkpoints are pruned
to the policy and then, as a last resort, down to the single best one. If even that is not
enough the run stops with STORAGE_FULL (CLI exit code 4) before writing anything. The last
valid checkpoint is never deleted, and metrics live outside checkpoints, so pruning loses none.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import RetentionSpec
from trainer_worker.checkpoints import CheckpointMeta, write_index

_log = logging.getLogger(__name__)
_GB = 1024**3

# (free bytes, total bytes) of the filesystem holding a path; injectable for tests
DiskProbe = Callable[[Path], tuple[int, int]]


def disk_usage(path: Path) -> tuple[int, int]:
    usage = shutil.disk_usage(path)
    return usage.free, usage.total


@dataclass(frozen=True)
class RetentionPlan:
    keep: list[CheckpointMeta]  # oldest first
    delete: list[CheckpointMeta]

    @property
    def freed_bytes(self) -> int:
        return sum(e.size_bytes for e in self.delete)


def best_of(entries: list[CheckpointMeta]) -> CheckpointMeta:
    """Lowest eval loss (the newest among equals); the newest when none was evaluated."""
    evaluated = [e for e in entries if e.eval_loss is not None]
    if evaluated:
        return min(evaluated, key=lambda e: (e.eval_loss, -e.step))
    return max(entries, key=lambda e: e.step)


def plan_retention(
    entries: list[CheckpointMeta], policy: RetentionSpec, *, aggressive: bool = False
) -> RetentionPlan:
    """What to keep and delete. `aggressive` keeps only the single best checkpoint."""
    if not entries:
        return RetentionPlan([], [])
    by_step = sorted(entries, key=lambda e: e.step)
    if aggressive:
        keep_steps = {best_of(by_step).step}
    else:
        keep_steps = {e.step for e in by_step[-policy.keep_last_n :]}
        evaluated = sorted(
            (e for e in by_step if e.eval_loss is not None), key=lambda e: (e.eval_loss, -e.step)
        )
        keep_steps |= {e.step for e in evaluated[: policy.keep_best_k]}
        if policy.max_total_size_gb is not None:
            keep_steps = _fit(by_step, keep_steps, int(policy.max_total_size_gb * _GB))
    keep = [e for e in by_step if e.step in keep_steps]
    return RetentionPlan(keep, [e for e in by_step if e.step not in keep_steps])


def _fit(by_step: list[CheckpointMeta], keep_steps: set[int], limit: int) -> set[int]:
    """Drop kept checkpoints, oldest non-best first, until they fit (at least one stays)."""
    best = best_of(by_step).step
    kept = [e for e in by_step if e.step in keep_steps]
    while len(kept) > 1 and sum(e.size_bytes for e in kept) > limit:
        victim = next(e for e in kept if e.step != best)
        kept.remove(victim)
    return {e.step for e in kept}


def entries_of(directory: Path) -> list[CheckpointMeta]:
    """Readable checkpoints on disk (the index rewritten from them)."""
    if not directory.is_dir():
        return []
    return write_index(directory)


def apply_plan(directory: Path, plan: RetentionPlan) -> int:
    """Delete what the plan says; returns the bytes freed."""
    for entry in plan.delete:
        shutil.rmtree(directory / entry.name, ignore_errors=True)
        _log.info("checkpoint pruned: %s", entry.name, extra={"event": "checkpoint.pruned"})
    if plan.delete:
        write_index(directory)
    return plan.freed_bytes


def make_room(
    directory: Path,
    needed_bytes: int,
    policy: RetentionSpec,
    *,
    probe: DiskProbe = disk_usage,
) -> int:
    """Ensure a write of `needed_bytes` leaves `min_free_disk_fraction` of the disk free:
    prune to the policy, then to the single best checkpoint. Returns the bytes freed;
    STORAGE_FULL when even that is not enough."""
    directory.mkdir(parents=True, exist_ok=True)
    freed = 0
    for aggressive in (False, True):
        free, total = probe(directory)
        if free - needed_bytes >= policy.min_free_disk_fraction * total:
            return freed
        freed += apply_plan(
            directory, plan_retention(entries_of(directory), policy, aggressive=aggressive)
        )
    free, total = probe(directory)
    if free - needed_bytes >= policy.min_free_disk_fraction * total:
        return freed
    raise AppError(
        ErrorCode.STORAGE_FULL,
        f"not enough disk for a {needed_bytes / 1e6:.1f} MB checkpoint: {free / 1e6:.1f} MB free "
        f"of {total / 1e6:.1f} MB, {policy.min_free_disk_fraction:.0%} must stay free; "
        "free space or lower the retention counts",
    )


def estimate_size(directory: Path, fallback_bytes: int) -> int:
    """The next checkpoint's size: the newest one's, or `fallback_bytes` before the first."""
    entries = entries_of(directory)
    return max(entries, key=lambda e: e.step).size_bytes if entries else fallback_bytes
