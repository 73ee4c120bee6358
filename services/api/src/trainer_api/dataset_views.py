"""What the API knows of a classification dataset: its folder's `manifest.json` once
prepared, else the live state of the run that prepares it (a dataset's id is its run's
id)."""

from __future__ import annotations

from pathlib import Path

import redis

from platform_core.api_models import DatasetList, DatasetPublic
from platform_core.errors import AppError, ErrorCode
from platform_core.layout import MANIFEST_FILE, DataLayout
from platform_core.manifests import read_dataset_manifest
from platform_core.paths import id_folders
from platform_core.run_index import index_key
from platform_core.run_state import RunStatus
from trainer_api.live_state import live_state


def load_dataset(client: redis.Redis, data_root: Path, dataset_id: str) -> DatasetPublic:
    """NOT_FOUND unless prepared or being prepared."""
    live = live_state(client, dataset_id)
    path = DataLayout(data_root).dataset_manifest(dataset_id)
    if path.is_file():
        manifest = read_dataset_manifest(path)
        return DatasetPublic(
            dataset_id=dataset_id,
            status=RunStatus.COMPLETED,
            message=live.message,
            source=manifest.source,
            report=manifest.report,
            baseline=manifest.baseline,
            created_at=manifest.created_at,
            duration_s=manifest.duration_s,
        )
    if live.status is None or live.kind != "prepare_dataset":
        raise AppError(ErrorCode.NOT_FOUND, f"dataset {dataset_id} does not exist")
    return DatasetPublic(dataset_id=dataset_id, status=live.status, message=live.message)


def list_datasets(client: redis.Redis, data_root: Path) -> DatasetList:
    """Folders under `datasets/` with a manifest and preparation runs in the run index."""
    ids: set[str] = set()
    folder = DataLayout(data_root).datasets_dir
    ids.update(name for name in id_folders(folder) if (folder / name / MANIFEST_FILE).is_file())
    runs = client.zrange(index_key(kind="prepare_dataset"), 0, -1)
    ids.update(raw.decode() for raw in runs if isinstance(raw, bytes))
    items: list[DatasetPublic] = []
    for dataset_id in sorted(ids):
        try:
            items.append(load_dataset(client, data_root, dataset_id))
        except AppError:  # a folder whose manifest no longer parses: not a usable dataset
            continue
    return DatasetList(items=items)
