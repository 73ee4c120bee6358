"""Which checkpoints a run keeps, and making room on disk before a write.

The newest valid checkpoint is the run's resume point and is always kept, whatever the
policy says. Beside it the policy (`RetentionSpec`) keeps the newest `keep_last_n`, the best
`keep_best_k` by eval loss, and, when `max_total_size_gb` is set, drops the oldest of the rest
(the best last) until the kept ones fit; when the budget cannot hold the best and the newest,
the newest stays and the plan carries a notice saying so. Before each write the size of the
new checkpoint is estimated; when the free disk left after it would fall under
`min_free_disk_fraction`, checkpoints are pruned to the policy, then to the best and the
newest, then to the newest alone. If even that is not enough the run stops with STORAGE_FULL
(CLI exit code 4) before writing anything. Metrics live outside checkpoints, so pruning loses
none.

The entries given to a plan must be valid checkpoints: a run plans over the ones it wrote
(their meta read back), `trainctl cleanup` over the ones that verify.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import RetentionSpec
from trainer_worker.checkpoints import CheckpointMeta, write_index

_log = logging.getLogger(__name__)
GB = 1024**3

# (free bytes, total bytes) of the filesystem holding a path; injectable for tests
DiskProbe = Callable[[Path], tuple[int, int]]


def disk_usage(path: Path) -> tuple[int, int]:
    usage = shutil.disk_usage(path)
    return usage.free, usage.total


@dataclass(frozen=True)
class RetentionPlan:
    keep: list[CheckpointMeta]  # oldest first
    delete: list[CheckpointMeta]
    notices: list[str] = field(default_factory=list)  # what the policy could not honour

    @property
    def freed_bytes(self) -> int:
        return sum(e.size_bytes for e in self.delete)

    def keeps(self, step: int) -> bool:
        return any(e.step == step for e in self.keep)


def best_of(entries: list[CheckpointMeta]) -> CheckpointMeta:
    """Lowest eval loss (the newest among equals); the newest when none was evaluated."""
    evaluated = [e for e in entries if e.eval_loss is not None]
    if evaluated:
        return min(evaluated, key=lambda e: (e.eval_loss, -e.step))
    return max(entries, key=lambda e: e.step)


def plan_retention(
    entries: list[CheckpointMeta], policy: RetentionSpec, *, aggressive: bool = False
) -> RetentionPlan:
    """What to keep and delete. `aggressive` keeps only the best and the newest."""
    if not entries:
        return RetentionPlan([], [])
    by_step = sorted(entries, key=lambda e: e.step)
    newest = by_step[-1].step
    notices: list[str] = []
    if aggressive:
        keep_steps = {best_of(by_step).step, newest}
    else:
        keep_steps = {e.step for e in by_step[-policy.keep_last_n :]} | {newest}
        evaluated = sorted(
            (e for e in by_step if e.eval_loss is not None), key=lambda e: (e.eval_loss, -e.step)
        )
        keep_steps |= {e.step for e in evaluated[: policy.keep_best_k]}
        if policy.max_total_size_gb is not None:
            keep_steps = _fit(by_step, keep_steps, int(policy.max_total_size_gb * GB), notices)
    keep = [e for e in by_step if e.step in keep_steps]
    return RetentionPlan(keep, [e for e in by_step if e.step not in keep_steps], notices)


def newest_only(entries: list[CheckpointMeta]) -> RetentionPlan:
    """The last resort before a write: the resume point alone."""
    by_step = sorted(entries, key=lambda e: e.step)
    return RetentionPlan(by_step[-1:], by_step[:-1])


def _fit(
    by_step: list[CheckpointMeta], keep_steps: set[int], limit: int, notices: list[str]
) -> set[int]:
    """Drop kept checkpoints until they fit: the oldest that is neither best nor newest
    first, then the best; the newest (the resume point) always stays."""
    best, newest = best_of(by_step).step, by_step[-1].step
    kept = [e for e in by_step if e.step in keep_steps]
    order = [e for e in kept if e.step not in (best, newest)]
    order += [e for e in kept if e.step == best and e.step != newest]
    while order and sum(e.size_bytes for e in kept) > limit:
        victim = order.pop(0)
        kept.remove(victim)
        if victim.step == best:
            notices.append(
                f"max_total_size_gb cannot hold the best checkpoint (step {best}) beside the "
                f"newest (step {newest}): kept the newest, the resume point"
            )
    return {e.step for e in kept}


def entries_of(directory: Path) -> list[CheckpointMeta]:
    """Readable checkpoints on disk (the index rewritten from them)."""
    if not directory.is_dir():
        return []
    return write_index(directory)


def apply_plan(directory: Path, plan: RetentionPlan) -> int:
    """Delete what the plan says and log its notices; returns the bytes freed."""
    for notice in plan.notices:
        _log.warning(notice, extra={"event": "checkpoint.retention_notice"})
    for entry in plan.delete:
        shutil.rmtree(directory / entry.name, ignore_errors=True)
        _log.info("checkpoint pruned: %s", entry.name, extra={"event": "checkpoint.pruned"})
    if plan.delete:
        write_index(directory)
    return plan.freed_bytes


# Kept free beyond each checkpoint, whatever `min_free_disk_fraction` says (0 included): room
# for the run's manifest, metrics and last log lines, so a run that meets a full disk can
# still record why it failed.
RECORD_RESERVE_BYTES = 256 * 1024


def make_room(
    directory: Path,
    needed_bytes: int,
    policy: RetentionSpec,
    *,
    probe: DiskProbe = disk_usage,
) -> int:
    """Ensure a write of `needed_bytes` leaves `min_free_disk_fraction` of the disk free,
    plus `RECORD_RESERVE_BYTES`: prune to the policy, then to the best and the newest, then
    to the newest alone. Returns the bytes freed; STORAGE_FULL when even that is not
    enough."""
    directory.mkdir(parents=True, exist_ok=True)
    needed_bytes += RECORD_RESERVE_BYTES
    freed = 0
    stages: list[Callable[[list[CheckpointMeta]], RetentionPlan]] = [
        lambda entries: plan_retention(entries, policy),
        lambda entries: plan_retention(entries, policy, aggressive=True),
        newest_only,
    ]
    for stage in stages:
        free, total = probe(directory)
        if free - needed_bytes >= policy.min_free_disk_fraction * total:
            return freed
        entries = entries_of(directory)
        if entries:
            freed += apply_plan(directory, stage(entries))
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
