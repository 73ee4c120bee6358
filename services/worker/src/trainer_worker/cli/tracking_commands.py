"""`trainctl sync-tracking RUN_ID`: replay what a finished run's tracking buffer still holds
into its MLflow run (trainer_worker.tracking.sync). Exit 0 once MLflow has everything, the
seeds' tracking exit code (5) while it still does not answer."""

from __future__ import annotations

import argparse

from platform_core.errors import AppError, ErrorCode, ExitCode
from platform_core.layout import DataLayout
from platform_core.settings import Settings
from trainer_worker.tracking.sync import sync_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", help="a run that ended while MLflow did not answer")


def sync_tracking_command(settings: Settings, args: argparse.Namespace) -> int:
    layout = DataLayout(settings.data_root.resolve())
    report = sync_run(layout, args.run_id, settings.tracking)
    if not report.synced:
        note = report.describe(layout.relative(layout.tracking_buffer(args.run_id)))
        raise AppError(ErrorCode.TRACKING_UNAVAILABLE, f"run {args.run_id}: {note}")
    record = report.record
    print(f"run {args.run_id}: MLflow run {record.mlflow_run_id} has every metric")
    if record.ui_url:
        print(record.ui_url)
    return ExitCode.OK
