"""What the API knows of a run: its live state in Redis (`live_state.py`) and, once it has
them, its artifacts on disk (`runs/<id>/manifest.json`, read through
`platform_core.manifests`), the source of truth of a finished run.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import redis

from platform_core.api_models import RunMetrics, RunProgress, RunPublic
from platform_core.errors import AppError, ErrorCode
from platform_core.layout import DataLayout
from platform_core.manifests import (
    RunManifest,
    TrackingRecord,
    read_run_manifest,
    read_tracking_record,
)
from platform_core.run_state import status_key
from trainer_api.live_state import (
    LiveState,
    LiveStateReader,
    integer,
    live_state,
    live_states,
    number,
)


@dataclass(frozen=True, slots=True)
class ManifestView:
    """A run's manifest and the metrics `GET /runs/{id}` shows, computed once per manifest
    (the cache keeps them, and polls of a finished run ask again and again)."""

    manifest: RunManifest
    metrics: RunMetrics | None

    @classmethod
    def of(cls, manifest: RunManifest) -> ManifestView:
        found = manifest.metrics
        if found is None:
            return cls(manifest, None)
        durations = manifest.durations_s
        metrics = RunMetrics(
            steps=found.steps,
            final_loss=found.final_loss,
            best_eval_loss=found.best_eval_loss,
            first_perplexity=found.first_perplexity,
            final_perplexity=found.final_perplexity,
            tokens_per_s=found.tokens_per_s,
            duration_s=None if durations is None else durations.total,
            stop_reason=manifest.stop_reason,
        )
        return cls(manifest, metrics)


def run_folder(data_root: Path, run_id: str) -> Path:
    return DataLayout(data_root).run_dir(run_id)


class ManifestCache:
    """Parsed manifests by file identity (inode, mtime, size): polling a finished run costs a
    `stat`, not a read and a parse. The worker replaces a manifest atomically, so a new
    version is a new inode."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[tuple[int, int, int], ManifestView | AppError]]
        self._entries = OrderedDict()
        self._lock = threading.Lock()  # shared by the event loop and the threadpool

    def get(self, path: Path) -> ManifestView | AppError | None:
        """The manifest at `path`; None when there is none, its error when this release
        cannot read it."""
        key = os.fspath(path)  # str keys and os.stat: cheaper than Path's hashing and stat
        try:
            found = os.stat(key)
        except OSError:
            return None
        identity = (found.st_ino, found.st_mtime_ns, found.st_size)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0] == identity:
                self._entries.move_to_end(key)
                return hit[1]
        manifest = _read_view(path)
        with self._lock:
            self._entries[key] = (identity, manifest)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return manifest


def _read_view(path: Path) -> ManifestView | AppError:
    try:
        return ManifestView.of(read_run_manifest(path))
    except AppError as error:
        return error


_manifests = ManifestCache()


def read_manifest(data_root: Path, run_id: str) -> ManifestView | AppError | None:
    return _manifests.get(DataLayout(data_root).run_manifest(run_id))


def _progress(figures: dict[str, str]) -> RunProgress | None:
    if not figures:
        return None
    return RunProgress(
        step=integer(figures.get("step")),
        total_steps=integer(figures.get("total_steps")),
        epoch=number(figures.get("epoch")),
        fraction=number(figures.get("fraction")),
        eta_s=number(figures.get("eta_s")),
        loss=number(figures.get("loss")),
        tokens_per_s=number(figures.get("tokens_per_s")),
        last_checkpoint_step=integer(figures.get("last_checkpoint_step")),
    )


def load_run(client: redis.Redis, data_root: Path, run_id: str) -> RunPublic:
    """Live state plus, for a finished run, its manifest's metrics; NOT_FOUND when neither
    Redis nor the data root knows the run."""
    return run_public(live_state(client, run_id), data_root, run_id)


async def load_run_async(reader: LiveStateReader, data_root: Path, run_id: str) -> RunPublic:
    """`load_run` for handlers on the event loop (the manifest read is a cached `stat`)."""
    return run_public(await reader.read(run_id), data_root, run_id)


def run_public(live: LiveState, data_root: Path, run_id: str) -> RunPublic:
    # the manifest matters once the run has ended (or Redis forgot it): polls of a live run
    # stay one Redis round trip
    live_only = live.status is not None and not live.status.is_terminal
    found = None if live_only else read_manifest(data_root, run_id)
    if isinstance(found, AppError) and live.status is None:
        raise AppError(found.code, f"run {run_id}: {found.message}")
    view = found if isinstance(found, ManifestView) else None
    status = live.status or (view.manifest.status if view else None)
    if status is None:
        raise AppError(ErrorCode.NOT_FOUND, f"run {run_id} does not exist")
    kind = live.kind or (view.manifest.kind if view else None)
    progress = _progress(live.progress)
    finished = status.is_terminal
    return RunPublic(
        run_id=run_id,
        kind=kind,
        status=status,
        message=live.message,
        user_id=integer(live.meta.get("user_id")),
        created_at=number(live.meta.get("created_at")),
        last_heartbeat=live.heartbeat,
        heartbeat_age_s=None if live.heartbeat is None else max(0.0, time.time() - live.heartbeat),
        eta_s=None if finished or progress is None else progress.eta_s,
        progress=progress,
        metrics=view.metrics if finished and view is not None else None,
        tracking=_tracking(data_root, run_id, view),
    )


def _tracking(data_root: Path, run_id: str, view: ManifestView | None) -> TrackingRecord | None:
    """The run's MLflow run: the manifest's record once the run ended, else the one the
    worker wrote when MLflow created the run (a stat while tracking has not begun)."""
    if view is not None and view.manifest.tracking is not None:
        return view.manifest.tracking
    try:
        path = DataLayout(data_root).tracking_record(run_id)
        return read_tracking_record(path) if path.is_file() else None
    except AppError:  # unreadable or not a run id: GET /runs/{id} still answers
        return None


def list_page(client: redis.Redis, data_root: Path, run_ids: list[str]) -> list[RunPublic]:
    """The runs of one listing page (their live state in one round trip); an id whose state
    is gone (Redis flushed, folder removed) is left out rather than failing the page."""
    found: list[RunPublic] = []
    for run_id, live in zip(run_ids, live_states(client, run_ids), strict=True):
        try:
            found.append(run_public(live, data_root, run_id))
        except AppError:
            continue
    return found


def run_exists(client: redis.Redis, data_root: Path, run_id: str) -> bool:
    return (
        bool(client.exists(status_key(run_id)))
        or DataLayout(data_root).run_manifest(run_id).is_file()
    )


def model_run_exists(client: redis.Redis, data_root: Path, run_id: str) -> bool:
    """A model run (not a tokenizer's) that Redis or the data root knows."""
    if DataLayout(data_root).run_manifest(run_id).is_file():
        return True
    live = live_state(client, run_id)
    return live.status is not None and live.kind == "train_model"
