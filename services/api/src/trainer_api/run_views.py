"""What the API knows of a run: its live state in Redis (`live_state.py`) and, once it has
them, its artifacts on disk (`runs/<id>/manifest.json`), the source of truth of a
finished run. Artifacts are read leniently (unknown fields ignored, NaN and infinities as
None): the worker may add fields, and JSON has no NaN.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from functools import cached_property
from pathlib import Path
from typing import Annotated, TypeVar

import redis
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from platform_core.api_models import RunMetrics, RunProgress, RunPublic, RunStatusName
from platform_core.errors import AppError, ErrorCode
from platform_core.events import JobKind
from platform_core.paths import read_regular_text, resolve_inside
from platform_core.run_state import INDEX_KEY, meta_key, status_key
from trainer_api.live_state import (
    KINDS,
    STATUSES,
    LiveState,
    LiveStateReader,
    finite,
    integer,
    live_state,
    live_states,
    number,
    text,
)

TERMINAL: frozenset[RunStatusName] = frozenset({"completed", "failed", "cancelled"})
ModelT = TypeVar("ModelT", bound=BaseModel)


Finite = Annotated[float | None, AfterValidator(finite)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ManifestEvalPoint(_Lenient):
    step: int
    eval_loss: Finite = None
    perplexity: Finite = None


class ManifestMetrics(_Lenient):
    steps: int | None = None
    final_loss: Finite = None
    best_eval_loss: Finite = None
    first_perplexity: Finite = None
    final_perplexity: Finite = None
    tokens_per_s: Finite = None
    eval_history: list[ManifestEvalPoint] = []


class RunManifest(_Lenient):
    """The part of `runs/<id>/manifest.json` the API shows."""

    status: str | None = None
    kind: str | None = None
    stop_reason: str | None = None
    metrics: ManifestMetrics | None = None
    durations_s: dict[str, Finite] = {}

    @cached_property
    def public_metrics(self) -> RunMetrics | None:
        """The metrics as `GET /runs/{id}` shows them; computed once per parsed manifest (the
        cache keeps manifests, and polls of a finished run ask again and again)."""
        if self.metrics is None:
            return None
        found = self.metrics
        return RunMetrics(
            steps=found.steps,
            final_loss=found.final_loss,
            best_eval_loss=found.best_eval_loss,
            first_perplexity=found.first_perplexity,
            final_perplexity=found.final_perplexity,
            tokens_per_s=found.tokens_per_s,
            duration_s=self.durations_s.get("total"),
            stop_reason=self.stop_reason,
        )


def read_json(path: Path) -> object | None:
    """The JSON in `path`, or None when it is missing or not JSON (the worker replaces its
    files atomically, so this means absent or corrupt, not half-written)."""
    try:
        parsed: object = json.loads(read_regular_text(path))  # never through a link
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return parsed


def run_folder(data_root: Path, run_id: str) -> Path:
    return resolve_inside(data_root, f"runs/{run_id}")


def read_model(path: Path, model: type[ModelT]) -> ModelT | None:
    """The JSON in `path` as `model`, or None when it is missing or does not fit."""
    raw = read_json(path)
    try:
        return None if raw is None else model.model_validate(raw)
    except ValidationError:
        return None


class ManifestCache:
    """Parsed manifests by file identity (inode, mtime, size): polling a finished run costs a
    `stat`, not a read and a parse. The worker replaces a manifest atomically, so a new
    version is a new inode."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[tuple[int, int, int], RunManifest | None]]
        self._entries = OrderedDict()
        self._lock = threading.Lock()  # shared by the event loop and the threadpool

    def get(self, path: Path) -> RunManifest | None:
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
        manifest = read_model(path, RunManifest)
        with self._lock:
            self._entries[key] = (identity, manifest)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return manifest


_manifests = ManifestCache()


def read_manifest(data_root: Path, run_id: str) -> RunManifest | None:
    return _manifests.get(run_folder(data_root, run_id) / "manifest.json")


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
    live_only = live.status is not None and live.status not in TERMINAL
    manifest = None if live_only else read_manifest(data_root, run_id)
    status = live.status or (STATUSES.get(manifest.status or "") if manifest else None)
    if status is None:
        raise AppError(ErrorCode.NOT_FOUND, f"run {run_id} does not exist")
    kind = live.kind or (KINDS.get(manifest.kind or "") if manifest else None)
    progress = _progress(live.progress)
    finished = status in TERMINAL
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
        metrics=manifest.public_metrics if finished and manifest is not None else None,
    )


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
        or (run_folder(data_root, run_id) / "manifest.json").is_file()
    )


def model_run_exists(client: redis.Redis, data_root: Path, run_id: str) -> bool:
    """A model run (not a tokenizer's) that Redis or the data root knows."""
    if (run_folder(data_root, run_id) / "manifest.json").is_file():
        return True
    live = live_state(client, run_id)
    return live.status is not None and live.kind == "train_model"


def matching_run_ids(
    client: redis.Redis,
    *,
    status: RunStatusName | None,
    kind: JobKind | None,
    user_id: int | None,
) -> list[str]:
    """Ids in the run index, newest first, that match every filter given."""
    ids = [text(raw) or "" for raw in client.zrevrange(INDEX_KEY, 0, -1)]
    if status is None and kind is None and user_id is None:
        return ids
    pipe = client.pipeline(transaction=False)
    for run_id in ids:
        pipe.get(status_key(run_id))
        pipe.hmget(meta_key(run_id), ["kind", "user_id"])
    answers = pipe.execute()
    wanted = (status, kind, None if user_id is None else str(user_id))
    matching: list[str] = []
    for index, run_id in enumerate(ids):
        found_kind, found_user = answers[2 * index + 1]
        found = (text(answers[2 * index]), text(found_kind), text(found_user))
        if all(want is None or want == got for want, got in zip(wanted, found, strict=True)):
            matching.append(run_id)
    return matching
