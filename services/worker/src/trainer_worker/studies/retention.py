"""Checkpoints across a study: what stays on disk once trials end.

While a trial runs, its own retention keeps its last and its best checkpoint within its share
of the study's budget (`study_specs.trial_spec`, `share_probe`: checked before every write).
When a trial ends, this keeps the best completed trial's best checkpoint (and its final
weights, to serve it) and deletes every other ended trial's checkpoints and weights. A trial
the stale-run sweep gave up on (its job died) is pruned by the next trial to start or by the
finalization, whichever comes first (`prune_given_up`). So the disk holds at most one share
per running trial plus one for the best: `checkpoint_budget_gb` in all.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from platform_core.errors import AppError, ErrorCode
from platform_core.layout import DataLayout
from platform_core.studies import StudyStore
from platform_core.study_api import TrialRecord, best_trial
from platform_core.study_specs import StudySpec
from trainer_worker.checkpoint_retention import (
    GB,
    DiskProbe,
    RetentionPlan,
    apply_plan,
    best_of,
    disk_usage,
    entries_of,
)

_log = logging.getLogger(__name__)
# a trial's ending (tell, record, prune) takes well under a second; a holder that died
# releases the lock by expiry
LOCK_TTL_S = 60
LOCK_WAIT_S = 120.0
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@contextmanager
def study_lock(client: redis.Redis, study_id: str) -> Iterator[None]:
    """One holder at a time per study, across processes and machines (SET NX with a token,
    released only by its holder)."""
    key, token = f"studies:{study_id}:lock", uuid.uuid4().hex
    deadline = time.monotonic() + LOCK_WAIT_S
    while not client.set(key, token, nx=True, ex=LOCK_TTL_S):
        if time.monotonic() > deadline:
            raise AppError(ErrorCode.CONFLICT, f"study {study_id} stayed locked")
        time.sleep(0.02)
    try:
        yield
    finally:
        client.eval(_RELEASE, 1, key, token)


def share_probe(share_gb: float, min_free_disk_fraction: float) -> DiskProbe:
    """A trial's view of the disk for `make_room`: what is left of its share of the study's
    budget (its checkpoints on disk counted, a write in progress included), or what the real
    disk can spare past `min_free_disk_fraction`, whichever is less. Before every write the
    trial prunes its own checkpoints until the new one fits: the share is never exceeded.
    The total it reports is 0, so make_room's own fraction rule reads "free >= needed"; the
    disk's fraction is applied here."""
    share = int(share_gb * GB)

    def probe(directory: Path) -> tuple[int, int]:
        used = tree_bytes(directory)
        free, total = disk_usage(directory)
        return min(share - used, free - int(min_free_disk_fraction * total)), 0

    return probe


def tree_bytes(folder: Path) -> int:
    """Bytes of the files under `folder`; files and folders that vanish meanwhile (the
    checkpoint writer and retention run on other threads) count as gone."""
    total = 0
    for parent, _, names in os.walk(folder):  # os.walk skips what it cannot list
        for name in names:
            try:
                total += os.stat(os.path.join(parent, name)).st_size
            except FileNotFoundError:
                continue
    return total


def retain_study_checkpoints(
    layout: DataLayout, studies: StudyStore, study_id: str, spec: StudySpec, ended: TrialRecord
) -> bool:
    """`ended` just ended: when it beats the kept trial, it becomes the kept one (its best
    checkpoint only) and the previous one's checkpoints and weights go; otherwise its own go.
    One step per ended trial, whatever the study's size; call under `study_lock`. Whether
    `ended` is the study's new best."""
    kept = studies.kept_trial(study_id)
    contenders = [t for t in (kept, ended) if t is not None]
    best = best_trial(contenders, spec.direction)
    is_new_best = best is not None and best.run_id == ended.run_id
    if is_new_best:
        studies.set_kept_trial(study_id, ended)
        freed = _keep_best_only(layout, ended.run_id)
        loser = kept
    else:
        freed, loser = 0, ended
    if loser is not None and loser.run_id != best_id(best):
        freed += _remove_weights(layout, loser.run_id)
    if freed:
        _log.info(
            "study checkpoints pruned",
            extra={"event": "study.retention", "run_id": study_id, "freed_bytes": freed},
        )
    return is_new_best


def prune_given_up(layout: DataLayout, studies: StudyStore, study_id: str) -> int:
    """Remove the checkpoints and weights of the trials the stale-run sweep gave up on
    (`StudyStore.fail_trial`): their jobs died before the study's retention ran for them.
    Called by each trial as it starts (before it writes, so the budget holds) and by the
    finalization. No lock: each such trial is handed to one caller (`take_given_up`), and a
    failed trial is never the kept one. The bytes freed."""
    given_up = studies.take_given_up(study_id)  # one round trip; usually nothing
    if not given_up:
        return 0
    kept = best_id(studies.kept_trial(study_id))
    freed = sum(_remove_weights(layout, run_id) for run_id in given_up if run_id != kept)
    _log.info(
        "given-up trials' checkpoints pruned",
        extra={"event": "study.retention", "run_id": study_id, "freed_bytes": freed},
    )
    return freed


def best_id(best: TrialRecord | None) -> str | None:
    return None if best is None else best.run_id


def _remove_weights(layout: DataLayout, run_id: str) -> int:
    freed = 0
    for folder in (layout.checkpoints_dir(run_id), layout.model_dir(run_id)):
        if folder.is_dir():
            freed += tree_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
    return freed


def _keep_best_only(layout: DataLayout, run_id: str) -> int:
    directory = layout.checkpoints_dir(run_id)
    entries = entries_of(directory)
    if not entries:
        return 0
    best = best_of(entries)
    plan = RetentionPlan([best], [e for e in entries if e.step != best.step])
    return apply_plan(directory, plan)
