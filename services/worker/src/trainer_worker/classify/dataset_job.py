"""The preparation job's body: collect, prepare, train the baseline, write the dataset's
folder (it appears whole: written beside it, then renamed into place) and report.

```
datasets/<id>/manifest.json       DatasetManifest (spec, source, report, baseline, files)
datasets/<id>/{train,val,test}.jsonl   {"id", "text", "label"} per line
datasets/<id>/report.json         the DatasetReport alone, for people
datasets/<id>/eval/baseline.json  the baseline's metrics, where a classifier's go
```
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from platform_core.errors import AppError, ErrorCode, invalid_input
from platform_core.json_types import JsonObject
from platform_core.layout import EVAL, MANIFEST_FILE
from platform_core.manifests import (
    SPLITS,
    DatasetManifest,
    read_dataset_manifest,
    write_atomic,
    write_manifest,
)
from platform_core.settings import ClassifySettings
from platform_core.specs import DatasetSpec
from trainer_worker.classify.baseline import train_baseline
from trainer_worker.classify.preparation import PreparedDataset, prepare_rows
from trainer_worker.classify.records import LabelledText
from trainer_worker.classify.sources import collect
from trainer_worker.job_context import JobContext, Outcome

STEPS = 3  # collect + prepare, baseline, write
# how often collection asks Redis for the cancel flag: an arXiv page arrives every 3 s at
# best, a file's rows far faster; a round trip a second costs nothing next to either
CANCEL_CHECK_S = 1.0


class _CancelRequested(Exception):
    """The operator asked the run to stop while it collected."""


def _until_cancelled(rows: Iterator[LabelledText], context: JobContext) -> Iterator[LabelledText]:
    checked = time.monotonic()
    for row in rows:
        if time.monotonic() - checked >= CANCEL_CHECK_S:
            if context.should_stop():
                raise _CancelRequested
            checked = time.monotonic()
        yield row


def prepare_dataset_body(
    spec_json: JsonObject, context: JobContext, settings: ClassifySettings
) -> Outcome:
    try:
        spec = DatasetSpec.model_validate(spec_json)
    except ValidationError as exc:
        raise invalid_input(exc, what="dataset spec") from exc
    layout, dataset_id = context.layout, context.run_id
    final = layout.dataset_dir(dataset_id)
    if (final / MANIFEST_FILE).is_file():  # an earlier attempt got as far as the rename
        return _outcome(context, read_dataset_manifest(final / MANIFEST_FILE))
    started = time.monotonic()
    work = layout.dataset_work_dir(dataset_id)
    work.mkdir(parents=True, exist_ok=True)
    context.progress(step=0, total_steps=STEPS, epoch=0, eta_s=None, message="collecting")
    collected = collect(spec.source, layout, work, settings)
    try:
        prepared = prepare_rows(_until_cancelled(collected.rows, context), spec)
    except _CancelRequested:  # what was collected stays in the work folder for a rerun
        return Outcome(
            result={"dataset_id": dataset_id},
            message="cancelled while collecting",
            cancelled_at_step=0,
        )
    if context.should_stop():
        return Outcome(result={"dataset_id": dataset_id}, message="cancelled", cancelled_at_step=1)
    report = prepared.report
    context.progress(
        step=1,
        total_steps=STEPS,
        epoch=0,
        eta_s=None,
        message=f"{report.rows_kept} rows in {len(report.labels)} classes",
    )
    baseline = (
        train_baseline(prepared.splits, report.labels, seed=spec.seed) if spec.baseline else None
    )
    context.progress(step=2, total_steps=STEPS, epoch=0, eta_s=None, message="writing")
    staging = work / "dataset"
    if staging.exists():  # half written by a dead attempt
        shutil.rmtree(staging)
    (staging / EVAL).mkdir(parents=True)
    files = _write_splits(staging, prepared)
    write_atomic(staging / "report.json", report.model_dump_json(indent=2).encode())
    files["report.json"] = _sha256(staging / "report.json")
    if baseline is not None:
        write_atomic(staging / EVAL / "baseline.json", baseline.model_dump_json(indent=2).encode())
        files[f"{EVAL}/baseline.json"] = _sha256(staging / EVAL / "baseline.json")
    manifest = DatasetManifest(
        id=dataset_id,
        spec=spec,
        source=collected.description,
        report=report,
        baseline=baseline,
        files=files,
        library_versions=_versions(),
        created_at=datetime.now(UTC),
        duration_s=time.monotonic() - started,
    )
    write_manifest(staging / MANIFEST_FILE, manifest)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(final)
    shutil.rmtree(work, ignore_errors=True)  # saved pages: the dataset now holds the rows
    context.progress(step=STEPS, total_steps=STEPS, epoch=1, eta_s=0, message="prepared")
    return _outcome(context, manifest)


def _outcome(context: JobContext, manifest: DatasetManifest) -> Outcome:
    report = manifest.report
    result: JsonObject = {
        "dataset_id": manifest.id,
        "rows": report.rows_kept,
        "classes": len(report.labels),
    }
    message = (
        f"{report.rows_kept} rows, {len(report.labels)} classes "
        f"({report.duplicates_by_id + report.duplicates_by_text} duplicates, "
        f"{report.filtered_empty + report.filtered_too_short} filtered)"
    )
    if manifest.baseline is not None:
        result["baseline_accuracy"] = manifest.baseline.test.accuracy
        result["baseline_macro_f1"] = manifest.baseline.test.macro_f1
        message += (
            f"; baseline test accuracy {manifest.baseline.test.accuracy:.3f}, "
            f"macro F1 {manifest.baseline.test.macro_f1:.3f}"
        )
    event_report: JsonObject = json.loads(report.model_dump_json())
    if manifest.baseline is not None:
        event_report["baseline_test"] = {
            "accuracy": manifest.baseline.test.accuracy,
            "macro_f1": manifest.baseline.test.macro_f1,
        }
    return Outcome(
        result=result,
        message=message,
        artifact_dir=context.layout.relative(context.layout.dataset_dir(manifest.id)),
        report=event_report,
    )


def _write_splits(folder: Path, prepared: PreparedDataset) -> dict[str, str]:
    files: dict[str, str] = {}
    for name in SPLITS:
        path = folder / f"{name}.jsonl"
        write_atomic(path, "".join(_line(row) for row in prepared.splits[name]).encode("utf-8"))
        files[path.name] = _sha256(path)
    return files


def _line(row: LabelledText) -> str:
    return (
        json.dumps({"id": row.id, "text": row.text, "label": row.label}, ensure_ascii=False) + "\n"
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for package in ("scikit-learn", "botocore", "huggingface-hub"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def read_split(path: Path) -> list[LabelledText]:
    """A split file written above; DATA_INVALID when a line is not one."""
    rows: list[LabelledText] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            raw: object = json.loads(line)
        except ValueError as exc:
            raise AppError(
                ErrorCode.DATA_INVALID, f"{path.name}: line {number} is not JSON"
            ) from exc
        if not (
            isinstance(raw, dict)
            and isinstance(raw.get("text"), str)
            and isinstance(raw.get("label"), str)
        ):
            raise AppError(
                ErrorCode.DATA_INVALID, f"{path.name}: line {number} has no text or label"
            )
        row_id = raw.get("id")
        rows.append(
            LabelledText(
                text=str(raw["text"]),
                label=str(raw["label"]),
                id=row_id if isinstance(row_id, str) else None,
            )
        )
    return rows
