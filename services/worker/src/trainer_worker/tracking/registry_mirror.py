"""MLflow's model registry as a mirror of ours, kept by the worker (the API never imports
MLflow: `tests/test_import_boundaries.py`).

Every registry change counts its name up in `MIRROR_PENDING_KEY` and queues `mirror_registry`
(`platform_core.model_registry`). The job syncs each pending name's whole state, so it is
idempotent and a missed or repeated job changes nothing:
- the registered model `<name>`;
- one MLflow model version per version of ours (MLflow numbers its versions itself: ours is
  the tag `trainer.version`), its source the version's files logged to an MLflow run of
  their own (so `models:/<name>@production` loads), tagged with its stage and source run;
- the aliases `production` (the production version) and `staging` (the newest version in
  staging), deleted when no version holds that stage. Archived versions carry the tag only.

MLflow down: the job logs it, leaves the names pending and fails, so RQ retries it; a name
still pending is synced by the next job (any later change queues one, or queue
`trainer_worker.jobs.mirror_registry` by hand). The registry change never waits on MLflow.
"""

from __future__ import annotations

import logging
from typing import Final

import redis

from platform_core.layout import DataLayout
from platform_core.model_registry import MIRROR_PENDING_KEY, ModelRegistry, semver_key
from platform_core.settings import TrackingSettings
from trainer_worker.tracking.backend import MlflowBackend

_log = logging.getLogger(__name__)
VERSION_TAG: Final = "trainer.version"
STAGE_TAG: Final = "trainer.stage"
SOURCE_RUN_TAG: Final = "trainer.source_run"
MODEL_ARTIFACTS: Final = "model"  # the version's files in its MLflow run
ALIASED_STAGES: Final = ("production", "staging")  # archived: many versions, no alias

# KEYS: pending; ARGV: name, the count the sync started from. Cleared only when no change
# came while it ran (a change meanwhile keeps the name for the next sync).
_CLEAR = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


def mirror_pending(
    client: redis.Redis, layout: DataLayout, settings: TrackingSettings
) -> dict[str, list[str]]:
    """Sync every pending name; {"mirrored": [...], "failed": [...]}. Tracking off: nothing
    is mirrored and nothing stays pending."""
    if not settings.enabled:
        client.delete(MIRROR_PENDING_KEY)
        return {"mirrored": [], "failed": []}
    registry = ModelRegistry(client, layout)
    clear = client.register_script(_CLEAR)
    mirrored: list[str] = []
    failed: list[str] = []
    backend = MlflowBackend(settings, layout)
    for raw_name, count in sorted(client.hgetall(MIRROR_PENDING_KEY).items()):
        name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
        try:
            mirror_model(backend, registry, layout, name)
        except Exception as exc:  # whatever the MLflow client raises when down
            _log.warning(
                "registry mirror failed for %s: %s",
                name,
                type(exc).__name__,
                extra={"event": "registry.mirror_failed", "error_code": "TRACKING_UNAVAILABLE"},
            )
            failed.append(name)
            continue
        clear(keys=[MIRROR_PENDING_KEY], args=[name, count])
        mirrored.append(name)
    return {"mirrored": mirrored, "failed": failed}


def mirror_model(
    backend: MlflowBackend, registry: ModelRegistry, layout: DataLayout, name: str
) -> None:
    """Make MLflow's registered model `name` match ours (see the module's docstring)."""
    mlflow = backend.connect()
    states = registry.versions(name)
    found = mlflow.search_registered_models(filter_string=f"name = '{name}'")
    if found:
        aliases = set(found[0].aliases)
    else:
        mlflow.create_registered_model(name, tags={"trainer.registry": "model-trainer"})
        aliases = set()
    held = {
        version.tags.get(VERSION_TAG): str(version.version)
        for version in mlflow.search_model_versions(f"name = '{name}'")
    }
    numbers: dict[str, str] = {}
    for state in states:
        number = held.get(state.version) or _create_version(
            backend, registry, layout, name, state.version
        )
        mlflow.set_model_version_tag(name, number, STAGE_TAG, state.stage)
        numbers[state.version] = number
    for stage in ALIASED_STAGES:
        holders = sorted((s.version for s in states if s.stage == stage), key=semver_key)
        if holders:
            mlflow.set_registered_model_alias(name, stage, numbers[holders[-1]])
        elif stage in aliases:  # no version holds the stage any more
            mlflow.delete_registered_model_alias(name, stage)


def _create_version(
    backend: MlflowBackend, registry: ModelRegistry, layout: DataLayout, name: str, version: str
) -> str:
    """An MLflow run holding the version's files (MLflow takes a model version's source only
    from a run's artifacts), then the model version on them; its number. A run left by an
    earlier try that broke off is found by its tag and filled again."""
    mlflow = backend.connect()
    source_run = registry.metadata(name, version).source_run
    tags = {VERSION_TAG: version, SOURCE_RUN_TAG: source_run, "trainer.model": name}
    record = backend.open_run(f"registry-{name}-{version}", None, tags)
    run_id = record.mlflow_run_id
    assert run_id is not None  # open_run always answers with a run (None: manifests only)
    mlflow.log_artifacts(run_id, str(layout.model_version_dir(name, version)), MODEL_ARTIFACTS)
    backend.terminate(run_id, "FINISHED")
    created = mlflow.create_model_version(
        name,
        source=f"{mlflow.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACTS}",
        run_id=run_id,
        tags={VERSION_TAG: version, SOURCE_RUN_TAG: source_run},
        description=f"{name} {version} (model-trainer registry)",
    )
    return str(created.version)
