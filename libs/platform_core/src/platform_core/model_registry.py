"""The model registry: named models with semantic versions, each version's files under
`models/<name>/<version>/` (as `transformers.from_pretrained` loads them, plus
`metadata.json`), its stage (staging, production, archived) in Redis.

Every change of stage is one Lua script, so it is atomic: a promotion to production archives
the version it replaces in the same step, and of two racing promotions one wins whole (there
is never more than one production version per name). Each change appends an entry (who,
why, from which stage to which, the production version it replaced) to the name's Redis
list and then to `models/<name>/history.jsonl`; neither is ever rewritten. Rollback puts
back the production version the current one replaced.

Registering copies (hard-links when it can) a run's saved transformers model; nothing here
imports torch or transformers, so the API registers and promotes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal, get_args

import redis
from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import (
    Event,
    ModelPromoted,
    ModelRolledBack,
    ModelStageChangedPayload,
    Stage,
)
from platform_core.layout import MANIFEST_FILE, DataLayout
from platform_core.manifests import (
    DatasetRef,
    ModelVersionMetadata,
    RunManifest,
    read_dataset_manifest,
    read_metrics_summary,
    read_model_metadata,
    read_run_manifest,
    storage_error,
    write_manifest,
)

_log = logging.getLogger(__name__)
METADATA_FILE: Final = "metadata.json"
STAGES: Final[tuple[Stage, ...]] = get_args(Stage)
# what from_pretrained reads of a model folder: weights, config, tokenizer and its vocabulary
MODEL_FILE_SUFFIXES: Final = (".safetensors", ".bin", ".json", ".txt", ".model")
HISTORY_SCAN_LIMIT: Final = 10_000  # entries a rollback looks back through (years of changes)

Action = Literal["register", "promote", "rollback"]
DISCORD_ID: Final = re.compile(r"[1-9][0-9]{16,18}")  # a snowflake: an actor that is a user
# MLflow's model registry mirrors this one (trainer_worker.tracking.registry_mirror): each
# change counts up its name here and queues the mirror job, which syncs every name pending
# and clears a count only if no change came meanwhile; MLflow down leaves the name pending
MIRROR_PENDING_KEY: Final = "registry:mirror:pending"  # hash name -> changes not yet mirrored
MIRROR_JOB: Final = "trainer_worker.jobs.mirror_registry"
MIRROR_RETRY_S: Final = (5, 10)  # a tracking server restarting: as the training jobs retry


class RegistryChange(BaseModel):
    """One entry of a model's history: a registration, promotion or rollback."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Action
    name: str
    version: str
    from_stage: Stage | None  # None for a registration
    to_stage: Stage
    previous_production: str | None  # the production version before the change
    actor: str  # who asked (a Discord id, a user name, "api")
    reason: str
    at: datetime


def models_key() -> str:
    return "registry:models"


def versions_key(name: str) -> str:
    return f"registry:{name}:versions"  # hash version -> stage


def production_key(name: str) -> str:
    return f"registry:{name}:production"


def history_key(name: str) -> str:
    return f"registry:{name}:history"  # list of RegistryChange JSON, oldest first


# Each script appends its history entry before it changes a stage: a Lua script that fails
# half-way keeps what it wrote, so a history key that refuses the append (one of the wrong
# type) must leave the stages as they were.
# KEYS: models, versions, history; ARGV: name, version, entry JSON
_REGISTER = """
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return redis.error_reply('EXISTS') end
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], 'staging')
redis.call('SADD', KEYS[1], ARGV[1])
return ARGV[3]
"""

# KEYS: versions, production, history; ARGV: name, version, target stage, actor, reason, at
_PROMOTE = """
local current = redis.call('HGET', KEYS[1], ARGV[2])
if not current then return redis.error_reply('NO_VERSION') end
if current == ARGV[3] then return redis.error_reply('SAME_STAGE') end
local production = redis.call('GET', KEYS[2])
local entry = cjson.encode({action = 'promote', name = ARGV[1], version = ARGV[2],
  from_stage = current, to_stage = ARGV[3], previous_production = production or cjson.null,
  actor = ARGV[4], reason = ARGV[5], at = ARGV[6]})
redis.call('RPUSH', KEYS[3], entry)
if ARGV[3] == 'production' then
  if production then redis.call('HSET', KEYS[1], production, 'archived') end
  redis.call('SET', KEYS[2], ARGV[2])
elseif production == ARGV[2] then
  redis.call('DEL', KEYS[2])
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return entry
"""

# KEYS: versions, production, history; ARGV: name, actor, reason, at, scan limit
_ROLLBACK = """
local production = redis.call('GET', KEYS[2])
if not production then return redis.error_reply('NO_PRODUCTION') end
local entries = redis.call('LRANGE', KEYS[3], -tonumber(ARGV[5]), -1)
local target = nil
for i = #entries, 1, -1 do
  local entry = cjson.decode(entries[i])
  if entry.to_stage == 'production' and entry.version == production then
    if entry.previous_production ~= cjson.null then target = entry.previous_production end
    break
  end
end
if not target then return redis.error_reply('NO_PREVIOUS') end
local from_stage = redis.call('HGET', KEYS[1], target)
if not from_stage then return redis.error_reply('NO_PREVIOUS') end
redis.call('HSET', KEYS[1], production, 'archived')
redis.call('HSET', KEYS[1], target, 'production')
redis.call('SET', KEYS[2], target)
local entry = cjson.encode({action = 'rollback', name = ARGV[1], version = target,
  from_stage = from_stage, to_stage = 'production', previous_production = production,
  actor = ARGV[2], reason = ARGV[3], at = ARGV[4]})
redis.call('RPUSH', KEYS[3], entry)
return entry
"""

_ERRORS: Final[dict[str, tuple[ErrorCode, str]]] = {
    "EXISTS": (ErrorCode.CONFLICT, "version {version} of {name} is already registered"),
    "NO_VERSION": (ErrorCode.NOT_FOUND, "model {name} has no version {version}"),
    "SAME_STAGE": (ErrorCode.CONFLICT, "version {version} of {name} is already in {stage}"),
    "NO_PRODUCTION": (ErrorCode.CONFLICT, "model {name} has no production version"),
    "NO_PREVIOUS": (
        ErrorCode.CONFLICT,
        "model {name}'s production version replaced none: nothing to roll back to",
    ),
}


@dataclass(frozen=True, slots=True)
class VersionState:
    version: str
    stage: Stage


class ModelRegistry:
    """Stages in Redis, files and the on-disk history under the data root."""

    def __init__(
        self, client: redis.Redis, layout: DataLayout, *, bus: EventBus | None = None
    ) -> None:
        self._client = client
        self._layout = layout
        self._bus = bus  # promotions and rollbacks are published here once they committed
        self._register = client.register_script(_REGISTER)
        self._promote = client.register_script(_PROMOTE)
        self._rollback = client.register_script(_ROLLBACK)

    # ---- reading ------------------------------------------------------------------------

    def names(self) -> list[str]:
        raw = self._client.smembers(models_key())
        return sorted(item.decode() for item in raw if isinstance(item, bytes))

    def versions(self, name: str) -> list[VersionState]:
        """Every version of `name` with its stage, oldest version first; NOT_FOUND for a name
        never registered."""
        self._layout.registered_model_dir(name)  # checks the name
        raw = self._client.hgetall(versions_key(name))
        if not raw:
            raise AppError(ErrorCode.NOT_FOUND, f"no model named {name} is registered")
        states = [VersionState(_text(k), _stage(_text(v))) for k, v in raw.items()]
        return sorted(states, key=lambda state: semver_key(state.version))

    def production(self, name: str) -> str | None:
        raw = self._client.get(production_key(name))
        return raw.decode() if isinstance(raw, bytes) else None

    def history(self, name: str) -> list[RegistryChange]:
        raw = self._client.lrange(history_key(name), 0, -1)
        return [RegistryChange.model_validate_json(item) for item in raw]

    def metadata(self, name: str, version: str) -> ModelVersionMetadata:
        return read_model_metadata(self._layout.model_version_dir(name, version) / METADATA_FILE)

    # ---- changing -----------------------------------------------------------------------

    def register(
        self,
        name: str,
        version: str | None,
        *,
        source_run: str,
        dataset_id: str | None,
        actor: str,
        reason: str,
    ) -> ModelVersionMetadata:
        """Copy run `source_run`'s saved transformers model into `models/<name>/<version>/`
        with its metadata, and register it in staging. `version` None: the next minor
        version (1.0.0 for a new name). `dataset_id` None: a classifier run's own dataset."""
        layout = self._layout
        version = version or self._next_version(name)
        folder = layout.model_version_dir(name, version)
        if folder.exists() or self._client.hexists(versions_key(name), version):
            raise AppError(ErrorCode.CONFLICT, f"version {version} of {name} is already registered")
        model_dir = _saved_model(layout, source_run)
        run = _run_manifest(layout, source_run)
        if dataset_id is None and run is not None and run.classifier is not None:
            dataset_id = run.classifier.dataset_id
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            # a folder of its own: two registrations racing for one version never share it
            staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=folder.parent))
            staging.chmod(0o755)  # mkdtemp's 0700 would hide the version from other users
        except OSError as exc:
            raise storage_error(exc, f"registering {name} {version}") from exc
        try:
            files = {
                path.name: _link_or_copy(path, staging / path.name)
                for path in _model_files(model_dir)
            }
            metadata = ModelVersionMetadata(
                name=name,
                version=version,
                source_run=source_run,
                dataset=_dataset_ref(layout, dataset_id),
                hyperparameters=run.spec if run is not None else {},
                metrics=_run_metrics(layout, source_run, run),
                size_bytes=sum((staging / file).stat().st_size for file in files),
                files=files,
                git_commit=git_commit(),
                created_at=datetime.now(UTC),
            )
            write_manifest(staging / METADATA_FILE, metadata)
            staging.rename(folder)  # refused when another registration got there first
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if folder.exists():
                raise AppError(
                    ErrorCode.CONFLICT, f"version {version} of {name} is already registered"
                ) from exc
            raise storage_error(exc, f"registering {name} {version}") from exc
        entry = RegistryChange(
            action="register",
            name=name,
            version=version,
            from_stage=None,
            to_stage="staging",
            previous_production=self.production(name),
            actor=actor,
            reason=reason,
            at=metadata.created_at,
        )
        keys = [models_key(), versions_key(name), history_key(name)]
        try:
            self._register(keys=keys, args=[name, version, entry.model_dump_json()])
        except redis.ResponseError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise _script_error(exc, name=name, version=version, stage="staging") from exc
        self._log_to_disk(entry)
        self._mirror(name)
        return metadata

    def promote(
        self, name: str, version: str, stage: Stage, *, actor: str, reason: str
    ) -> RegistryChange:
        """Move `version` to `stage` atomically; to production archives the one it replaces."""
        self._layout.model_version_dir(name, version)  # checks name and version
        keys = [versions_key(name), production_key(name), history_key(name)]
        args = [name, version, stage, actor, reason, _now()]
        try:
            raw = self._promote(keys=keys, args=args)
        except redis.ResponseError as exc:
            raise _script_error(exc, name=name, version=version, stage=stage) from exc
        return self._published(self._recorded(raw))

    def rollback(self, name: str, *, actor: str, reason: str) -> RegistryChange:
        """Put back the production version that the current one replaced (archiving it)."""
        self._layout.registered_model_dir(name)
        keys = [versions_key(name), production_key(name), history_key(name)]
        args = [name, actor, reason, _now(), str(HISTORY_SCAN_LIMIT)]
        try:
            raw = self._rollback(keys=keys, args=args)
        except redis.ResponseError as exc:
            raise _script_error(exc, name=name, version="", stage="production") from exc
        return self._published(self._recorded(raw))

    # ---- helpers ------------------------------------------------------------------------

    def _recorded(self, raw: object) -> RegistryChange:
        if not isinstance(raw, bytes | str):  # pragma: no cover - each script returns its entry
            raise AppError(ErrorCode.INTERNAL, "the registry script answered no entry")
        entry = RegistryChange.model_validate_json(raw)
        self._log_to_disk(entry)
        self._mirror(entry.name)
        _log.info(
            "model stage changed",
            extra={
                "event": f"registry.{entry.action}",
                "model": entry.name,
                "version": entry.version,
            },
        )
        return entry

    def _published(self, change: RegistryChange) -> RegistryChange:
        """Publish a committed promotion or rollback on the bus. The change stands whatever
        happens here: a bus that refuses is logged, and the caller still gets its answer (an
        error would invite a retry that the registry then refuses as a conflict)."""
        if self._bus is None or change.from_stage is None:
            return change
        try:
            source_run = self.metadata(change.name, change.version).source_run
        except AppError:  # an unreadable folder: the model's name stands in for the run
            source_run = f"model-{change.name}"
        try:
            self._bus.publish(stage_changed_event(change, source_run))
        except redis.RedisError:
            _log.exception(
                "registry change not published",
                extra={"event": "registry.event_unpublished", "run_id": source_run},
            )
        return change

    def _mirror(self, name: str) -> None:
        """Mark `name` for the MLflow mirror and queue its job (a worker without tracking
        drops it). The change stands whatever happens here: a refusal is logged."""
        # here, not at the top: the CLI reads RegistryChange from this module without rq
        from rq import Queue, Retry  # noqa: PLC0415

        from platform_core.queue import INFERENCE_QUEUE  # noqa: PLC0415 - it loads rq

        try:
            self._client.hincrby(MIRROR_PENDING_KEY, name, 1)
            Queue(INFERENCE_QUEUE, connection=self._client).enqueue(
                MIRROR_JOB,
                description=f"mirror the registry ({name}) to MLflow",
                retry=Retry(max=len(MIRROR_RETRY_S), interval=list(MIRROR_RETRY_S)),
            )
        except redis.RedisError:
            _log.exception(
                "registry mirror not queued", extra={"event": "registry.mirror_unqueued"}
            )

    def _log_to_disk(self, entry: RegistryChange) -> None:
        """Append to `models/<name>/history.jsonl` (O_APPEND: whole lines, never rewritten).
        Redis holds the same entry; a disk that refuses is logged, not fatal."""
        path = self._layout.model_history(entry.name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            with contextlib.closing(os.fdopen(descriptor, "ab")) as handle:
                handle.write(entry.model_dump_json().encode() + b"\n")
        except OSError:
            _log.exception(
                "registry history not written", extra={"event": "registry.history_unwritten"}
            )

    def _next_version(self, name: str) -> str:
        raw = self._client.hkeys(versions_key(name))
        versions = [item.decode() for item in raw if isinstance(item, bytes)]
        if not versions:
            return "1.0.0"
        major, minor, _ = semver_key(max(versions, key=semver_key))
        return f"{major}.{minor + 1}.0"


def stage_changed_event(change: RegistryChange, source_run: str) -> Event:
    """The bus event of a committed promotion or rollback; the actor's Discord id, when it is
    one, becomes the event's user."""
    if change.from_stage is None:
        raise AppError(ErrorCode.INTERNAL, "a registration is not a change of stage")
    payload = ModelStageChangedPayload(
        name=change.name,
        version=change.version,
        from_stage=change.from_stage,
        to_stage=change.to_stage,
        previous_production=change.previous_production,
        actor=change.actor,
        reason=change.reason,
    )
    user_id = int(change.actor) if DISCORD_ID.fullmatch(change.actor) else None
    if change.action == "rollback":
        return ModelRolledBack(run_id=source_run, user_id=user_id, ts=change.at, payload=payload)
    return ModelPromoted(run_id=source_run, user_id=user_id, ts=change.at, payload=payload)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _stage(value: str) -> Stage:
    for stage in STAGES:
        if stage == value:
            return stage
    raise AppError(ErrorCode.DATA_INVALID, f"unknown registry stage {value!r}")


def semver_key(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in version.split("."))
    return major, minor, patch


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _script_error(exc: redis.ResponseError, *, name: str, version: str, stage: str) -> AppError:
    code_and_text = _ERRORS.get(str(exc).strip())
    if code_and_text is None:
        return AppError(ErrorCode.INTERNAL, f"registry script failed: {exc}")
    code, text = code_and_text
    return AppError(code, text.format(name=name, version=version, stage=stage))


def _saved_model(layout: DataLayout, run_id: str) -> Path:
    """The run's saved transformers model: `runs/<id>/model/` with a config.json."""
    folder = layout.model_dir(run_id)
    if not (folder / "config.json").is_file():
        raise AppError(
            ErrorCode.DATA_NOT_FOUND,
            f"run {run_id} has no saved transformers model (runs/{run_id}/model/config.json)",
        )
    return folder


def _model_files(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and not path.is_symlink() and path.suffix in MODEL_FILE_SUFFIXES
    )


def _link_or_copy(source: Path, target: Path) -> str:
    """Hard-link (same file system, no copy of GBs) or copy; the file's SHA-256."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    digest = hashlib.sha256()
    with target.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _dataset_ref(layout: DataLayout, dataset_id: str | None) -> DatasetRef | None:
    if dataset_id is None:
        return None
    manifest = read_dataset_manifest(layout.dataset_dir(dataset_id) / MANIFEST_FILE)
    return DatasetRef(id=manifest.id, source=manifest.source, report=manifest.report)


def _run_manifest(layout: DataLayout, run_id: str) -> RunManifest | None:
    path = layout.run_manifest(run_id)
    return read_run_manifest(path) if path.is_file() else None


def _run_metrics(layout: DataLayout, run_id: str, run: RunManifest | None) -> dict[str, JsonValue]:
    """The run's metrics summary, and a classifier's test report under "classifier" (test
    metrics, the baseline's, confusion, latency, size, int8)."""
    loaded: dict[str, JsonValue] = {}
    path = layout.eval_metrics(run_id)
    if path.is_file():
        try:
            loaded = json.loads(read_metrics_summary(path).model_dump_json())
        except (AppError, ValidationError):
            loaded = {}
    if run is not None and run.classifier is not None:
        loaded["classifier"] = json.loads(run.classifier.model_dump_json())
    return loaded


def git_commit() -> str | None:
    """The commit of the code running, from APP_GIT_COMMIT (set by the image build) or git."""
    if commit := os.environ.get("APP_GIT_COMMIT"):
        return commit[:64]
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH, as a developer runs it
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = found.stdout.strip()
    return commit if found.returncode == 0 and len(commit) == 40 else None
