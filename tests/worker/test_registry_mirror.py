"""MLflow's model registry mirrors ours, through the worker's mirror job, against a real
MLflow server: registered model, one model version per version, aliases = stages; MLflow
down leaves the change standing and the name pending until a later sync."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from rq import Queue

from platform_core.layout import DataLayout
from platform_core.model_registry import MIRROR_PENDING_KEY, ModelRegistry
from platform_core.queue import INFERENCE_QUEUE
from platform_core.settings import TrackingSettings
from tests.api.conftest import work
from tests.worker.mlflow_server import StoppableMlflow
from trainer_worker.tracking.registry_mirror import STAGE_TAG, VERSION_TAG, mirror_pending

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _saved_run(layout: DataLayout, run_id: str) -> str:
    folder = layout.model_dir(run_id)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "a"}}), encoding="utf-8")
    return run_id


def _versions(mlflow: MlflowClient, name: str) -> dict[str, tuple[str, str]]:
    """Our version -> (MLflow's number, stage tag)."""
    return {
        found.tags[VERSION_TAG]: (str(found.version), found.tags[STAGE_TAG])
        for found in mlflow.search_model_versions(f"name = '{name}'")
    }


def test_registry_changes_are_mirrored_and_survive_an_outage(
    tmp_path: Path,
    data_root: Path,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layout = DataLayout(data_root)
    registry = ModelRegistry(redis_client, layout)
    run = _saved_run(layout, "run-m")
    with StoppableMlflow(tmp_path / "mlflow") as server:
        monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
        monkeypatch.setenv("APP__TRACKING__URI", server.url)
        monkeypatch.setenv("APP__TRACKING__ENABLED", "true")
        for version in ("1.0.0", "1.1.0"):
            registry.register("clf", version, source_run=run, dataset_id=None, actor="t", reason="")
        registry.promote("clf", "1.0.0", "production", actor="t", reason="")
        registry.register("solo", None, source_run=run, dataset_id=None, actor="t", reason="")
        registry.promote("solo", "1.0.0", "production", actor="t", reason="")
        assert Queue(INFERENCE_QUEUE, connection=redis_client).count == 5  # one per change
        work(redis_client, INFERENCE_QUEUE)

        mlflow = MlflowClient(tracking_uri=server.url)
        held = _versions(mlflow, "clf")
        assert {v: stage for v, (_, stage) in held.items()} == {
            "1.0.0": "production",
            "1.1.0": "staging",
        }
        assert mlflow.get_model_version_by_alias("clf", "production").version == held["1.0.0"][0]
        assert mlflow.get_model_version_by_alias("clf", "staging").version == held["1.1.0"][0]
        first = mlflow.get_model_version("clf", held["1.0.0"][0])
        assert str(first.source).endswith("/model") and first.run_id is not None
        files = {f.path for f in mlflow.list_artifacts(first.run_id, "model")}
        assert {"model/config.json", "model/metadata.json"} <= files  # the version's own files
        assert _versions(mlflow, "solo") == {"1.0.0": ("1", "production")}
        assert mlflow.get_registered_model("solo").aliases == {"production": "1"}
        assert redis_client.hlen(MIRROR_PENDING_KEY) == 0

        server.stop()
        change = registry.promote("clf", "1.1.0", "production", actor="t", reason="A/B won")
        assert change.previous_production == "1.0.0"  # the change stands without MLflow
        work(redis_client, INFERENCE_QUEUE)  # the job fails: the name stays pending
        assert redis_client.hkeys(MIRROR_PENDING_KEY) == [b"clf"]

        server.start()
        settings = TrackingSettings(uri=server.url)
        assert mirror_pending(redis_client, layout, settings) == {
            "mirrored": ["clf"],
            "failed": [],
        }
        held_after = _versions(mlflow, "clf")
        assert held_after == {
            "1.0.0": (held["1.0.0"][0], "archived"),
            "1.1.0": (held["1.1.0"][0], "production"),
        }  # the same MLflow versions: the sync is idempotent
        assert mlflow.get_model_version_by_alias("clf", "production").version == held["1.1.0"][0]
        with pytest.raises(MlflowException):
            mlflow.get_model_version_by_alias("clf", "staging")  # no version is in staging
        assert redis_client.hlen(MIRROR_PENDING_KEY) == 0


def test_without_tracking_nothing_is_mirrored_or_kept(
    data_root: Path, redis_client: redis.Redis
) -> None:
    layout = DataLayout(data_root)
    registry = ModelRegistry(redis_client, layout)
    registry.register(
        "clf", None, source_run=_saved_run(layout, "run-o"), dataset_id=None, actor="t", reason=""
    )
    assert redis_client.hkeys(MIRROR_PENDING_KEY) == [b"clf"]
    off = TrackingSettings(enabled=False)
    assert mirror_pending(redis_client, layout, off) == {"mirrored": [], "failed": []}
    assert redis_client.hlen(MIRROR_PENDING_KEY) == 0
