"""Retraining a registered classifier and comparing two of its versions offline: the
per-model policy (a cron schedule, the data-growth trigger, the promotion threshold), the
requests that queue the runs, and the two automatic triggers.

A retraining is three runs chained on the training queue, each waiting for the one before
(`enqueue_job(after=...)`, RQ's `depends_on`; when a link's worker dies, the stale-run sweep
hands the wait to the link's next attempt, or ends the link and lets the next one start):
`<id>-data` prepares the production version's dataset spec again (skipped when a prepared
dataset is given), `<id>-train` trains the production version's spec on it, and `<id>`
itself (kind `retrain_model`) registers the result in staging, compares it with production
on the new dataset's held-out test split (the offline A/B), promotes it or keeps
production, and tells the owner (`trainer.model.retrained.v1`).
One retraining per model at a time: a lock, released by the last run, refuses another.

Nothing here imports torch: the API and the scheduler queue; the worker does the work.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Final, Literal

import redis
from croniter import croniter
from pydantic import JsonValue, ValidationError

from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.layout import DataLayout
from platform_core.manifests import DatasetManifest, DatasetRef, read_dataset_manifest
from platform_core.model_registry import ModelRegistry
from platform_core.queue import enqueue_job
from platform_core.retrain_specs import (
    CompareRequest,
    CompareSpec,
    RetrainAccepted,
    RetrainPolicy,
    RetrainPolicyPublic,
    RetrainSpec,
    Trigger,
)
from platform_core.run_state import INDEX_KEY, RunStatus
from platform_core.specs import TrainRunSpec

_log = logging.getLogger(__name__)

TICK_CRON: Final = "* * * * *"  # the scheduler's tick: cron's finest step, one minute
# a retraining holds its model's lock this long at most. The chain frees it itself, even when
# a link's worker dies (the stale-run sweep requeues the link or ends it, and the verdict
# follows), and so does the verdict's end without its job (queue._free_retrain_lock:
# cancelled while queued, stopped by force, given up on); the expiry is the last resort
LOCK_TTL_S: Final = 24 * 3600
SLOT_TTL_S: Final = 7 * 24 * 3600  # a fired schedule slot is remembered a week
# KEYS: the model's lock; ARGV: run id, TTL. Take it (nil), or answer the run that holds it.
_LOCK = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
"""


# ---- the policy store -------------------------------------------------------------------


def policies_key() -> str:
    return "retrain:policies"  # hash name -> RetrainPolicyPublic JSON


def lock_key(name: str) -> str:
    return f"retrain:lock:{name}"  # the retraining run in flight


def put_policy(client: redis.Redis, name: str, policy: RetrainPolicy) -> RetrainPolicyPublic:
    stored = RetrainPolicyPublic(name=name, policy=policy, updated_at=datetime.now(UTC))
    client.hset(policies_key(), name, stored.model_dump_json())
    return stored


def get_policy(client: redis.Redis, name: str) -> RetrainPolicyPublic | None:
    raw = client.hget(policies_key(), name)
    return _policy(raw) if isinstance(raw, bytes) else None


def all_policies(client: redis.Redis) -> list[RetrainPolicyPublic]:
    stored = [_policy(item) for item in client.hvals(policies_key()) if isinstance(item, bytes)]
    return sorted(stored, key=lambda policy: policy.name)


def _policy(raw: bytes) -> RetrainPolicyPublic:
    try:
        return RetrainPolicyPublic.model_validate_json(raw)
    except ValidationError as exc:
        raise AppError(ErrorCode.DATA_INVALID, "a stored retrain policy is unreadable") from exc


def release_lock(client: redis.Redis, name: str, run_id: str) -> None:
    """Free the model for the next retraining, when `run_id` still holds it."""
    if client.get(lock_key(name)) == run_id.encode():
        client.delete(lock_key(name))


# ---- queueing ---------------------------------------------------------------------------


def new_run_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def claim(client: redis.Redis, run_id: str) -> None:
    """Take a run id in the runs index (ZADD NX), as every submission does."""
    if not client.zadd(INDEX_KEY, {run_id: time.time()}, nx=True):
        raise AppError(ErrorCode.CONFLICT, f"run {run_id} already exists")


def request_retrain(
    client: redis.Redis,
    layout: DataLayout,
    name: str,
    *,
    trigger: Trigger,
    bus: EventBus,
    dataset_id: str | None = None,
    user_id: int | None = None,
    actor: str = "api",
) -> RetrainAccepted:
    """Queue a retraining of `name` (see the module's docstring). CONFLICT when the model
    has no production version, it is not a classifier, or a retraining is in flight."""
    registry = ModelRegistry(client, layout)
    registry.versions(name)  # NOT_FOUND for a name never registered
    production = registry.production(name)
    if production is None:
        raise AppError(ErrorCode.CONFLICT, f"model {name} has no production version to retrain")
    metadata = registry.metadata(name, production)
    try:
        spec = TrainRunSpec.model_validate(metadata.hyperparameters)
    except ValidationError as exc:
        raise AppError(
            ErrorCode.CONFLICT, f"{name} {production} was not trained from a model run's spec"
        ) from exc
    if spec.classifier is None:
        raise AppError(ErrorCode.CONFLICT, f"{name} is not a classifier: only those retrain")
    if dataset_id is not None and not layout.dataset_manifest(dataset_id).is_file():
        raise AppError(ErrorCode.DATA_NOT_FOUND, f"dataset {dataset_id!r} is not prepared")
    refresh = (
        None if dataset_id else _production_dataset(layout, name, production, metadata.dataset)
    )
    stored = get_policy(client, name)
    policy = stored.policy if stored else RetrainPolicy()
    run_id = new_run_id("retrain")
    held = client.register_script(_LOCK)(keys=[lock_key(name)], args=[run_id, LOCK_TTL_S])
    if held is not None:
        raise AppError(ErrorCode.CONFLICT, f"{name} is already retraining (run {held.decode()})")
    owner = user_id or policy.owner_id
    try:
        target = dataset_id or f"{run_id}-data"
        dataset_run = None if dataset_id else target
        if refresh is not None:
            _queue(client, bus, "prepare_dataset", target, refresh, owner, None)
        train_run = f"{run_id}-train"
        train = spec.model_copy(
            update={"classifier": spec.classifier.model_copy(update={"dataset_id": target})}
        )
        _queue(
            client,
            bus,
            "train_model",
            train_run,
            json.loads(train.model_dump_json()),
            owner,
            dataset_run,
        )
        retrain = RetrainSpec(
            name=name,
            trigger=trigger,
            production_version=production,
            dataset_id=target,
            train_run=train_run,
            min_accuracy_gain=policy.min_accuracy_gain,
            alpha=policy.alpha,
            actor=actor,
        )
        _queue(
            client,
            bus,
            "retrain_model",
            run_id,
            json.loads(retrain.model_dump_json()),
            owner,
            train_run,
        )
    except BaseException:
        release_lock(client, name, run_id)
        raise
    _log.info(
        "retraining queued",
        extra={"event": "retrain.queued", "run_id": run_id, "model": name, "trigger": trigger},
    )
    return RetrainAccepted(
        run_id=run_id,
        name=name,
        trigger=trigger,
        production_version=production,
        dataset_id=target,
        dataset_run=dataset_run,
        train_run=train_run,
        status=RunStatus.QUEUED,
    )


def request_compare(
    client: redis.Redis, layout: DataLayout, name: str, body: CompareRequest, *, bus: EventBus
) -> tuple[str, CompareSpec]:
    """Queue a `compare_models` run (`cmp-<hex>`): NOT_FOUND for a version or dataset that
    is not there, CONFLICT when there is no version to compare against."""
    registry = ModelRegistry(client, layout)
    stages = {state.version: state.stage for state in registry.versions(name)}
    current = body.current or registry.production(name)
    if current is None:
        raise AppError(ErrorCode.CONFLICT, f"model {name} has no production version: give current")
    for version in (current, body.candidate):
        if version not in stages:
            raise AppError(ErrorCode.NOT_FOUND, f"model {name} has no version {version}")
    if current == body.candidate:
        raise AppError(ErrorCode.INVALID_INPUT, "current and candidate are the same version")
    dataset_id = body.dataset_id
    if dataset_id is None:
        recorded = registry.metadata(name, body.candidate).dataset
        if recorded is None:
            raise AppError(
                ErrorCode.INVALID_INPUT, f"{name} {body.candidate} records no dataset: give one"
            )
        dataset_id = recorded.id
    if not layout.dataset_manifest(dataset_id).is_file():
        raise AppError(ErrorCode.DATA_NOT_FOUND, f"dataset {dataset_id!r} is not prepared")
    spec = CompareSpec(
        name=name,
        current=current,
        candidate=body.candidate,
        dataset_id=dataset_id,
        min_accuracy_gain=body.min_accuracy_gain,
        alpha=body.alpha,
    )
    run_id = new_run_id("cmp")
    _queue(
        client,
        bus,
        "compare_models",
        run_id,
        json.loads(spec.model_dump_json()),
        body.user_id,
        None,
    )
    return run_id, spec


def _queue(  # noqa: PLR0917 - one private call per link of the chain
    client: redis.Redis,
    bus: EventBus,
    kind: Literal["prepare_dataset", "train_model", "retrain_model", "compare_models"],
    run_id: str,
    spec: dict[str, JsonValue],
    user_id: int | None,
    after: str | None,
) -> None:
    claim(client, run_id)
    try:
        enqueue_job(
            client,
            kind,
            run_id,
            spec,
            user_id=user_id,
            description=f"{kind} {run_id}",
            bus=bus,
            after=after,
        )
    except BaseException:
        client.zrem(INDEX_KEY, run_id)
        raise


def _production_dataset(
    layout: DataLayout, name: str, production: str, recorded: DatasetRef | None
) -> dict[str, JsonValue]:
    """The spec the production version's dataset was prepared with: prepared again, a file
    or collector source reads what it holds now."""
    if recorded is None:
        raise AppError(ErrorCode.CONFLICT, f"{name} {production} records no dataset to refresh")
    manifest = read_dataset_manifest(layout.dataset_manifest(recorded.id))
    spec: dict[str, JsonValue] = json.loads(manifest.spec.model_dump_json())
    return spec


# ---- the automatic triggers -------------------------------------------------------------


def scheduled_retrains(
    client: redis.Redis, layout: DataLayout, *, bus: EventBus, now: datetime | None = None
) -> list[str]:
    """The scheduler's tick: queue a retraining of each model whose cron came due since its
    policy was set. Each slot fires once (SET NX), however many schedulers tick; a slot
    missed while none ran fires at the next tick, older ones not. Returns the runs queued."""
    now = now or datetime.now(UTC)
    queued: list[str] = []
    for stored in all_policies(client):
        if stored.policy.cron is None:
            continue
        slot: datetime = croniter(stored.policy.cron, now).get_prev(datetime)
        if slot < stored.updated_at:
            continue
        slot_key = f"retrain:slot:{stored.name}:{int(slot.timestamp())}"
        if not client.set(slot_key, "1", nx=True, ex=SLOT_TTL_S):
            continue
        queued += _try_retrain(client, layout, stored.name, "schedule", bus, None)
    return queued


def growth_retrains(
    client: redis.Redis, layout: DataLayout, dataset: DatasetManifest, *, bus: EventBus
) -> list[str]:
    """After a dataset is prepared: queue a retraining of each model with a growth trigger
    whose production dataset came from the same source and has at least `growth_threshold`
    fewer rows than `dataset`, on `dataset`. Returns the runs queued."""
    queued: list[str] = []
    registry = ModelRegistry(client, layout)
    for stored in all_policies(client):
        threshold = stored.policy.growth_threshold
        production = registry.production(stored.name)
        if threshold is None or production is None:
            continue
        recorded = registry.metadata(stored.name, production).dataset
        if recorded is None or recorded.id == dataset.id:
            continue
        try:
            base = read_dataset_manifest(layout.dataset_manifest(recorded.id))
        except AppError as error:  # removed or damaged: this model cannot tell; the others can
            _log.warning(
                "production dataset unreadable",
                extra={
                    "event": "retrain.growth_unknown",
                    "model": stored.name,
                    "error_code": error.code,
                },
            )
            continue
        if base.spec.source != dataset.spec.source:
            continue
        growth = dataset.report.rows_kept / base.report.rows_kept - 1
        if growth >= threshold:
            _log.info(
                "dataset grew",
                extra={"event": "retrain.data_growth", "model": stored.name, "growth": growth},
            )
            queued += _try_retrain(client, layout, stored.name, "data_growth", bus, dataset.id)
    return queued


def _try_retrain(  # noqa: PLR0917 - the two triggers' one call
    client: redis.Redis,
    layout: DataLayout,
    name: str,
    trigger: Trigger,
    bus: EventBus,
    dataset_id: str | None,
) -> list[str]:
    """An automatic trigger's retraining; one that cannot start (a retraining in flight,
    no production version) is logged and skipped, the next trigger tries again."""
    try:
        accepted = request_retrain(
            client, layout, name, trigger=trigger, bus=bus, dataset_id=dataset_id, actor=trigger
        )
    except AppError as error:
        _log.warning(
            "retraining not started",
            extra={"event": "retrain.skipped", "model": name, "error_code": error.code},
        )
        return []
    return [accepted.run_id]
