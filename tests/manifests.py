"""Run manifests as the worker writes them, for tests that set up a run folder by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from platform_core.json_types import JsonObject
from platform_core.manifests import RunManifest, write_manifest
from platform_core.run_state import RunStatus


def write_run_manifest(
    folder: Path, spec: JsonObject, *, status: RunStatus = RunStatus.COMPLETED
) -> RunManifest:
    """A model run's manifest in `folder` (whose name is the run id)."""
    manifest = RunManifest(
        run_id=folder.name,
        kind="train_model",
        status=status,
        spec=spec,
        started_at=datetime.now(UTC),
    )
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder / "manifest.json", manifest)
    return manifest
