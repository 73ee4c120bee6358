"""`trainctl list-checkpoints` and `trainctl cleanup`.

Both work on the data root alone, without Redis, and trust no checkpoint they have not
verified: `list-checkpoints` hashes every file (or, with `--no-verify`, says "unverified")
and marks corrupt and quarantined checkpoints; best, latest and retained are chosen among the
others. `cleanup` plans retention over the checkpoints that verify, so it never deletes the
newest valid one, and removes corrupt or quarantined ones only with `--corrupt`.
Exit codes: list-checkpoints 0 ok, 1 run folder not found; cleanup 0 ok, 1 cleanup error
(permission, I/O), 2 run folder not found.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from platform_core.errors import AppError
from platform_core.layout import CHECKPOINTS, MANIFEST_FILE, DataLayout
from platform_core.manifests import RunManifest, read_run_manifest
from platform_core.run_state import RunStatus
from platform_core.specs import RetentionSpec
from trainer_worker.checkpoint_retention import apply_plan, best_of, plan_retention
from trainer_worker.checkpoints import (
    CheckpointMeta,
    list_checkpoints,
    list_quarantined,
    read_meta,
    verify_checkpoint,
    write_index,
)

OK, ERROR, NOT_FOUND = 0, 1, 2


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run id")
    parser.add_argument("--format", choices=["table", "json", "csv"], default="table")
    parser.add_argument("--show-metrics", action="store_true", help="include the eval loss")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip hashing the files (fast; checkpoints are shown as unverified)",
    )


def add_cleanup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=None, help="one run id (default: every run)")
    parser.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    parser.add_argument(
        "--aggressive", action="store_true", help="keep only the best and the newest checkpoint"
    )
    parser.add_argument(
        "--orphaned-only",
        action="store_true",
        help="only remove leftovers: unfinished writes (and, with --corrupt, corrupt checkpoints)",
    )
    parser.add_argument(
        "--corrupt",
        action="store_true",
        help="also remove checkpoints that fail verification and quarantined ones",
    )


@dataclass(frozen=True)
class _Checked:
    """A checkpoint folder and what verification said of it."""

    path: Path
    status: str  # valid, unverified, corrupt or quarantined
    meta: CheckpointMeta | None  # None when unreadable
    reason: str = ""


def _check(checkpoints: Path, *, verify: bool) -> list[_Checked]:
    """Every published checkpoint, verified (or only its meta read), then the quarantined."""
    checked: list[_Checked] = []
    for path in list_checkpoints(checkpoints):
        try:
            meta = verify_checkpoint(path) if verify else read_meta(path)
        except AppError as error:
            checked.append(_Checked(path, "corrupt", _meta_or_none(path), error.message))
            continue
        checked.append(_Checked(path, "valid" if verify else "unverified", meta))
    checked.extend(
        _Checked(path, "quarantined", _meta_or_none(path), "set aside earlier")
        for path in list_quarantined(checkpoints)
    )
    return checked


def _meta_or_none(path: Path) -> CheckpointMeta | None:
    try:
        return read_meta(path)
    except AppError:
        return None


def _usable(checked: list[_Checked]) -> list[CheckpointMeta]:
    return [c.meta for c in checked if c.meta is not None and c.status in ("valid", "unverified")]


def list_checkpoints_command(data_root: Path, args: argparse.Namespace) -> int:
    folder = _run_folder(data_root, args.run)
    if folder is None:
        print(f"trainctl: run folder for {args.run!r} not found", file=sys.stderr)
        return 1
    checked = _check(folder / CHECKPOINTS, verify=not args.no_verify)
    entries = _usable(checked)
    kept = {e.step for e in plan_retention(entries, _retention(folder)).keep}
    best = best_of(entries).step if entries else None
    latest = max((e.step for e in entries), default=None)
    rows: list[dict[str, object]] = []
    for item in checked:
        usable = item.status in ("valid", "unverified")
        step = item.meta.step if item.meta is not None else _step_of(item.path)
        row: dict[str, object] = {
            "checkpoint": item.path.name,
            "step": step,
            "status": item.status,
            "is_best": usable and step == best,
            "is_latest": usable and step == latest,
            "retained": usable and step in kept,
            "size_mb": round(_size(item.path) / 1e6, 3),
            "sha256": item.meta.model_sha256 if item.meta is not None else None,
        }
        if args.show_metrics:
            row["eval_loss"] = item.meta.eval_loss if item.meta is not None else None
        rows.append(row)
    print(_render(rows, args.format))
    return OK


def _step_of(path: Path) -> int | None:
    digits = path.name.removeprefix("step-").split(".", 1)[0]
    return int(digits) if digits.isdigit() else None


def _render(rows: list[dict[str, object]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if not rows:
        return "" if fmt == "csv" else "no checkpoints"
    columns = list(rows[0])
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("─" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, str) and len(value) == 64:
        return value[:12]  # a hash: the first 12 hex digits identify it in a table
    return str(value)


@dataclass
class _Cleanup:
    dry_run: bool
    freed: int = 0
    removed: int = 0

    def remove(self, path: Path, size: int, why: str) -> None:
        print(
            f"{'would delete' if self.dry_run else 'deleted'} {path} ({size / 1e6:.1f} MB, {why})"
        )
        self.freed += size
        self.removed += 1
        if not self.dry_run:
            shutil.rmtree(path)


def cleanup_command(data_root: Path, args: argparse.Namespace) -> int:
    if args.run is not None:
        folder = _run_folder(data_root, args.run)
        if folder is None:
            print(f"trainctl: run folder for {args.run!r} not found", file=sys.stderr)
            return NOT_FOUND
        folders = [folder]
    else:
        runs = DataLayout(data_root).runs_dir
        folders = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    job = _Cleanup(dry_run=args.dry_run)
    try:
        for folder in folders:
            _clean_run(
                folder,
                job,
                aggressive=args.aggressive,
                orphaned_only=args.orphaned_only,
                corrupt=args.corrupt,
            )
    except OSError as exc:
        print(f"trainctl: cleanup failed: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return ERROR
    verb = "would free" if args.dry_run else "freed"
    print(f"{verb} {job.freed / 1e9:.3f} GB in {job.removed} item(s) across {len(folders)} run(s)")
    return OK


def _clean_run(
    folder: Path, job: _Cleanup, *, aggressive: bool, orphaned_only: bool, corrupt: bool
) -> None:
    checkpoints = folder / CHECKPOINTS
    if not checkpoints.is_dir() or _status(folder) == "running":
        return  # a live run prunes itself (and may be writing): cleanup leaves it alone
    for leftover in sorted(checkpoints.glob(".*.tmp")):  # writes that never finished
        job.remove(leftover, _size(leftover), "unfinished write")
    checked = _check(checkpoints, verify=True)
    damaged = [item for item in checked if item.status in ("corrupt", "quarantined")]
    for item in damaged:
        if corrupt:
            job.remove(item.path, _size(item.path), f"{item.status}: {item.reason}")
        else:
            print(f"kept {item.path} ({item.status}: {item.reason}; pass --corrupt to remove it)")
    if corrupt and damaged and not job.dry_run:
        write_index(checkpoints)
    if orphaned_only:
        return
    plan = plan_retention(_usable(checked), _retention(folder), aggressive=aggressive)
    for entry in plan.delete:
        print(
            f"{'would delete' if job.dry_run else 'deleted'} {checkpoints / entry.name} "
            f"({entry.size_bytes / 1e6:.1f} MB, retention)"
        )
    job.freed += plan.freed_bytes
    job.removed += len(plan.delete)
    if not job.dry_run:
        apply_plan(checkpoints, plan)
    for entry in plan.keep:
        print(f"kept {checkpoints / entry.name} (step {entry.step}, eval loss {entry.eval_loss})")
    for notice in plan.notices:
        print(f"note: {notice}")


def _run_folder(data_root: Path, run_id: str) -> Path | None:
    try:
        folder = DataLayout(data_root).run_dir(run_id)
    except AppError:  # not an id, or a link out of the data root
        return None
    return folder if folder.is_dir() else None


def _manifest(folder: Path) -> RunManifest | None:
    try:
        return read_run_manifest(folder / MANIFEST_FILE)
    except AppError:  # none yet (the run is preparing) or unreadable: defaults apply
        return None


def _status(folder: Path) -> RunStatus | None:
    manifest = _manifest(folder)
    return None if manifest is None else manifest.status


def _retention(folder: Path) -> RetentionSpec:
    manifest = _manifest(folder)
    try:
        return RetentionSpec() if manifest is None else manifest.train_spec().retention
    except AppError:  # another kind of run, or a spec this release no longer reads
        return RetentionSpec()


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0
