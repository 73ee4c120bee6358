"""Runs whose Redis record is gone (Redis lost its data, or was replaced) are rebuilt from
their folders: a run's manifest says what it is, who asked, its spec and how it ended.

A finished run gets its final status back, so listings and `GET /runs/{id}` know it again and
its id stays taken. A run whose manifest still says running (or queued) was interrupted with
its Redis record: it is restored as running with no heartbeat, so the next stale-run sweep
requeues it and it resumes from its newest valid checkpoint. Every worker does this when it
starts; restoring is idempotent (a run Redis knows is left alone) and safe to race (the
status moves are compare-and-set).
"""

from __future__ import annotations

import json
import logging

import redis

from platform_core.errors import AppError
from platform_core.layout import ID_PATTERN, DataLayout
from platform_core.manifests import RunManifest, read_run_manifest
from platform_core.run_state import RunStateStore, RunStatus

_log = logging.getLogger(__name__)
RECOVERED = "recovered from its manifest after Redis lost its record"


def recover_runs(client: redis.Redis, layout: DataLayout) -> list[str]:
    """Rebuild the Redis record of every run folder Redis does not know; the ids rebuilt."""
    folder = layout.runs_dir
    if not folder.is_dir():
        return []
    store = RunStateStore(client)
    recovered: list[str] = []
    for entry in sorted(folder.iterdir()):
        run_id = entry.name
        if not ID_PATTERN.fullmatch(run_id) or store.status(run_id) is not None:
            continue
        try:
            manifest = read_run_manifest(layout.run_manifest(run_id))
        except AppError as error:  # a folder without a usable manifest: nothing to rebuild
            _log.warning(
                "run folder not recovered: %s",
                error.message,
                extra={"event": "run.unrecoverable", "run_id": run_id},
            )
            continue
        _restore(store, manifest)
        recovered.append(run_id)
    if recovered:
        _log.warning(
            "rebuilt %d runs from their manifests",
            len(recovered),
            extra={"event": "runs.recovered"},
        )
    return recovered


def _restore(store: RunStateStore, manifest: RunManifest) -> None:
    run_id = manifest.run_id
    store.set_meta(
        run_id, kind=manifest.kind, user_id=manifest.user_id, spec_json=json.dumps(manifest.spec)
    )
    store.set_status(run_id, RunStatus.RUNNING, message=RECOVERED)
    if manifest.status.is_terminal:
        message = manifest.failure.message if manifest.failure else RECOVERED
        store.set_status(run_id, manifest.status, message=message)
