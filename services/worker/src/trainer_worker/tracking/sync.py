"""`trainctl sync-tracking RUN_ID`: hand MLflow what a run that has ended still holds in its
buffer (it ended while MLflow was down, past `final_wait_s`), with the same idempotent replay,
and record the outcome in its manifest. Runs on the data root's machine, like the checkpoint
commands."""

from __future__ import annotations

from platform_core.errors import AppError, ErrorCode
from platform_core.layout import DataLayout
from platform_core.manifests import read_run_manifest, write_manifest
from platform_core.run_state import RunStatus
from platform_core.settings import TrackingSettings
from trainer_worker.tracking.tracker import EndStatus, Tracker, TrackingReport

# a run's final status -> its MLflow run's
END_STATUS: dict[RunStatus, EndStatus] = {
    RunStatus.COMPLETED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.CANCELLED: "KILLED",
}


def sync_run(layout: DataLayout, run_id: str, settings: TrackingSettings) -> TrackingReport:
    """Replay the run's buffer into its MLflow run; DATA_NOT_FOUND without a manifest,
    CONFLICT while the run has not ended (its own sender is at work)."""
    path = layout.run_manifest(run_id)
    manifest = read_run_manifest(path)
    status = END_STATUS.get(manifest.status)
    if status is None:
        raise AppError(
            ErrorCode.CONFLICT, f"run {run_id} is {manifest.status.value}: its worker tracks it"
        )
    tracker = Tracker(
        run_id=run_id,
        kind=manifest.kind,
        attempt=manifest.attempt,
        layout=layout,
        settings=settings,
    )
    report = tracker.sync(status)
    write_manifest(path, read_run_manifest(path).model_copy(update={"tracking": report.record}))
    return report
