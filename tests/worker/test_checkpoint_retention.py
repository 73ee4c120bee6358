"""Retention: which checkpoints stay, pruning before writes, and the storage error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import RetentionSpec
from trainer_worker.checkpoint_retention import (
    RECORD_RESERVE_BYTES,
    apply_plan,
    best_of,
    disk_usage,
    entries_of,
    estimate_size,
    make_room,
    plan_retention,
)
from trainer_worker.checkpoints import INDEX_FILE, CheckpointMeta, checkpoint_name, list_checkpoints

MB = 1_000_000


def _meta(step: int, loss: float | None, size: int = MB) -> CheckpointMeta:
    return CheckpointMeta(step, loss, {"model.safetensors": {"sha256": "0" * 64, "size": size}})


def _write(directory: Path, meta: CheckpointMeta) -> None:
    """A checkpoint folder as the writer leaves it (meta and a file of the recorded size)."""
    folder = directory / checkpoint_name(meta.step)
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\0" * int(meta.files["model.safetensors"]["size"]))
    (folder / "meta.json").write_text(json.dumps(meta.__dict__))


def _steps(entries: list[CheckpointMeta]) -> list[int]:
    return [e.step for e in entries]


HISTORY = [_meta(10, 3.0), _meta(20, 2.0), _meta(30, 2.5), _meta(40, 2.2), _meta(50, None)]


@pytest.mark.parametrize(
    ("policy", "kept"),
    [
        (RetentionSpec(), [20, 50]),  # newest + best
        (RetentionSpec(keep_last_n=2), [20, 40, 50]),
        (RetentionSpec(keep_best_k=2), [20, 40, 50]),
        (RetentionSpec(keep_last_n=3, keep_best_k=2), [20, 30, 40, 50]),
        (RetentionSpec(keep_last_n=5, max_total_size_gb=2.5 * MB / 1024**3), [20, 50]),
    ],
)
def test_plans(policy: RetentionSpec, kept: list[int]) -> None:
    plan = plan_retention(HISTORY, policy)
    assert _steps(plan.keep) == kept
    assert sorted(_steps(plan.delete) + kept) == [10, 20, 30, 40, 50]
    assert plan.freed_bytes == MB * len(plan.delete)


def test_aggressive_keeps_the_best_and_the_newest_and_unevaluated_runs_the_newest() -> None:
    assert _steps(plan_retention(HISTORY, RetentionSpec(), aggressive=True).keep) == [20, 50]
    never_evaluated = [_meta(1, None), _meta(2, None)]
    assert best_of(never_evaluated).step == 2
    assert _steps(plan_retention(never_evaluated, RetentionSpec(), aggressive=True).keep) == [2]
    assert plan_retention([], RetentionSpec()).keep == []


def test_a_size_cap_never_deletes_the_last_checkpoint() -> None:
    huge = [_meta(1, 1.0, size=10 * MB)]
    assert _steps(plan_retention(huge, RetentionSpec(max_total_size_gb=1e-6)).keep) == [1]


def test_the_newest_is_kept_whatever_the_budget_and_a_notice_says_so() -> None:
    """A budget of 1.5 checkpoints cannot hold the best (step 20) beside the newest (step 50):
    the newest, the resume point, stays."""
    policy = RetentionSpec(keep_last_n=1, keep_best_k=1, max_total_size_gb=1.5 * MB / 1024**3)
    plan = plan_retention(HISTORY, policy)
    assert _steps(plan.keep) == [50] and plan.keeps(50) and not plan.keeps(20)
    assert len(plan.notices) == 1 and "step 20" in plan.notices[0]
    assert "step 50" in plan.notices[0]
    # the best being the newest needs no notice
    improving = [_meta(10, 3.0), _meta(20, 2.0)]
    plan = plan_retention(improving, RetentionSpec(keep_best_k=2, max_total_size_gb=1e-9))
    assert _steps(plan.keep) == [20] and plan.notices == []
    # no policy count ever drops the newest, even keep_last_n=1 with a better older best
    assert 50 in _steps(plan_retention(HISTORY, RetentionSpec(keep_last_n=1)).keep)


def test_ties_on_the_metric_keep_the_newest() -> None:
    assert best_of([_meta(1, 2.0), _meta(2, 2.0)]).step == 2


def test_apply_plan_deletes_folders_and_rewrites_the_index(tmp_path: Path) -> None:
    for meta in HISTORY:
        _write(tmp_path, meta)
    freed = apply_plan(tmp_path, plan_retention(entries_of(tmp_path), RetentionSpec()))
    assert freed == 3 * MB
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000020", "step-00000050"]
    assert [row["step"] for row in json.loads((tmp_path / INDEX_FILE).read_text())] == [20, 50]
    assert estimate_size(tmp_path, fallback_bytes=7) == MB
    assert estimate_size(tmp_path / "empty", fallback_bytes=7) == 7
    assert entries_of(tmp_path / "missing") == []


class FakeDisk:
    """A filesystem of `total` bytes whose usage is what the checkpoints folder holds plus
    `other` bytes; the free-space probe the retention code calls."""

    def __init__(self, total: float, other: float) -> None:
        self.total, self.other = int(total), int(other)

    def __call__(self, path: Path) -> tuple[int, int]:
        used = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return self.total - self.other - used, self.total


def test_make_room_prunes_to_the_policy_first(tmp_path: Path) -> None:
    for meta in HISTORY:
        _write(tmp_path, meta)
    # 10 MB disk, 3 MB used elsewhere, 5 MB of checkpoints: a 1 MB write would leave 1 MB < 10%
    freed = make_room(tmp_path, MB, RetentionSpec(keep_last_n=5), probe=FakeDisk(10 * MB, 3 * MB))
    # the policy keeps all five here, so it went on to the best and the newest
    assert freed == 3 * MB
    assert _steps(entries_of(tmp_path)) == [20, 50]


def test_make_room_with_enough_space_touches_nothing(tmp_path: Path) -> None:
    for meta in HISTORY:
        _write(tmp_path, meta)
    assert make_room(tmp_path, MB, RetentionSpec(keep_last_n=5), probe=FakeDisk(100 * MB, 0)) == 0
    assert len(entries_of(tmp_path)) == 5


def test_make_room_stops_at_the_policy_when_that_is_enough(tmp_path: Path) -> None:
    for meta in HISTORY:
        _write(tmp_path, meta)
    freed = make_room(tmp_path, MB, RetentionSpec(), probe=FakeDisk(10 * MB, 3.5 * MB))
    assert freed == 3 * MB
    assert _steps(entries_of(tmp_path)) == [20, 50]


def test_storage_full_when_even_the_newest_alone_leaves_too_little(tmp_path: Path) -> None:
    for meta in HISTORY:
        _write(tmp_path, meta)
    with pytest.raises(AppError) as info:
        make_room(tmp_path, 4 * MB, RetentionSpec(), probe=FakeDisk(10 * MB, 5 * MB))
    assert info.value.code is ErrorCode.STORAGE_FULL
    assert info.value.exit_code == 4
    assert _steps(entries_of(tmp_path)) == [50]  # the resume point survives, not the best


def test_on_a_real_small_filesystem(tmp_path: Path) -> None:
    """A 6 MB tmpfs when this machine lets us mount one (CI runs as root); otherwise the same
    sizes through the probe, so the test always runs."""
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = (
        os.geteuid() == 0 and os.system(f"mount -t tmpfs -o size=6m tmpfs {mount} 2>/dev/null") == 0
    )
    try:
        probe = disk_usage if mounted else FakeDisk(6 * 1024 * 1024, 0)
        folder = mount / "checkpoints"
        for meta in HISTORY[:4]:
            _write(folder, meta)  # 4 MB of checkpoints on a 6 MiB disk
        # a 2 MB write would leave under 10% free: pruned to the best and the newest
        make_room(folder, 2 * MB, RetentionSpec(keep_last_n=4), probe=probe)
        assert _steps(entries_of(folder)) == [20, 40]
        with pytest.raises(AppError) as info:
            make_room(folder, int(5.5 * MB), RetentionSpec(), probe=probe)
        assert info.value.code is ErrorCode.STORAGE_FULL
        assert _steps(entries_of(folder)) == [40]
    finally:
        if mounted:
            os.system(f"umount {mount}")


def test_make_room_keeps_room_to_record_the_run_even_with_no_free_fraction(
    tmp_path: Path,
) -> None:
    _write(tmp_path, _meta(10, 1.0))
    used = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    no_margin = RetentionSpec(min_free_disk_fraction=0.0)
    # exactly the checkpoint's size free: the manifest and logs would find no room after it
    with pytest.raises(AppError) as info:
        make_room(tmp_path, MB, no_margin, probe=FakeDisk(10 * MB, 10 * MB - used - MB))
    assert info.value.code is ErrorCode.STORAGE_FULL
    assert _steps(entries_of(tmp_path)) == [10]  # the resume point stays
    used = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())  # index rewritten
    room = FakeDisk(10 * MB, 10 * MB - used - MB - RECORD_RESERVE_BYTES)
    assert make_room(tmp_path, MB, no_margin, probe=room) == 0
