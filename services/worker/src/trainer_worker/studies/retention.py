"""Checkpoints across a study: what stays on disk once trials end.

While a trial runs, its own retention keeps its last and its best checkpoint within its share
of the study's budget (`study_specs.trial_spec`). When a trial ends, this keeps the best
completed trial's best checkpoint (and its final weights, to serve it) and deletes every
other ended trial's checkpoints and weights. So the disk holds at most one share per running
trial plus one for the best: `checkpoint_budget_gb` in all.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from platform_core.errors import AppError, ErrorCode
from platform_core.layout import DataLayout
from platform_core.studies import StudyStore
from platform_core.study_api import best_trial
from platform_core.study_specs import StudySpec
from trainer_worker.checkpoint_retention import RetentionPlan, apply_plan, best_of, entries_of

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


def retain_study_checkpoints(
    layout: DataLayout, studies: StudyStore, study_id: str, spec: StudySpec
) -> int:
    """Delete the checkpoints and weights of ended trials that are not the best, and every
    checkpoint but the best of the best trial; the bytes freed. Call under `study_lock`."""
    trials = studies.trials(study_id)
    best = best_trial(trials, spec.direction)
    freed = 0
    for record in trials:
        if record.state == "RUNNING":
            continue
        if best is not None and record.run_id == best.run_id:
            freed += _keep_best_only(layout, record.run_id)
            continue
        for folder in (layout.checkpoints_dir(record.run_id), layout.model_dir(record.run_id)):
            if folder.is_dir():
                freed += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
                shutil.rmtree(folder, ignore_errors=True)
    if freed:
        _log.info(
            "study checkpoints pruned",
            extra={"event": "study.retention", "run_id": study_id, "freed_bytes": freed},
        )
    return freed


def _keep_best_only(layout: DataLayout, run_id: str) -> int:
    directory = layout.checkpoints_dir(run_id)
    entries = entries_of(directory)
    if not entries:
        return 0
    best = best_of(entries)
    plan = RetentionPlan([best], [e for e in entries if e.step != best.step])
    return apply_plan(directory, plan)
