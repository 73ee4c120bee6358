"""A study's end and its checkpoints across trials, on a real Redis without training: a final
evaluation that fails still ends the study (failed, with the reason and its event), a study
with no completed trial fails or stays cancelled, a family without a test report refuses, and
the cross-trial retention keeps one trial's weights while every other ended trial's go.
`test_studies.py` runs the same code through real trials; these are the paths it cannot
reach in a few seconds."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import redis

from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import StudyCompleted
from platform_core.layout import DataLayout
from platform_core.manifests import (
    ClassificationMetrics,
    ClassifierRecord,
    LatencyReport,
    read_run_manifest,
    write_manifest,
)
from platform_core.run_state import RunStatus
from platform_core.studies import StudyStore
from platform_core.study_api import TrialRecord
from platform_core.study_specs import StudySpec, validate_study
from tests.manifests import write_run_manifest
from tests.worker.dual_agent_helpers import dual_agent_spec
from tests.worker.test_studies import study_payload
from trainer_worker.checkpoint_retention import GB, disk_usage
from trainer_worker.studies import retention
from trainer_worker.studies.finalize import draw_plots, evaluate_checkpoint, finish_study
from trainer_worker.studies.retention import (
    retain_study_checkpoints,
    share_probe,
    study_lock,
    tree_bytes,
)
from trainer_worker.studies.storage import make_storage, open_study

pytestmark = pytest.mark.integration


@pytest.fixture
def spec() -> StudySpec:
    return validate_study(study_payload("tok", n_trials=3, parallelism=1))


def _study(
    redis_client: redis.Redis, spec: StudySpec, study_id: str, owner: int | None
) -> StudyStore:
    studies = StudyStore(redis_client)
    studies.create(study_id, spec, user_id=owner)
    return studies


def _completed(
    study_id: str, ticket: int, value: float | None, state: str = "COMPLETE"
) -> TrialRecord:
    return TrialRecord.model_validate(
        {
            "run_id": f"{study_id}-t{ticket:04d}",
            "ticket": ticket,
            "trial_number": ticket - 1,
            "state": state,
            "value": value,
            "params": {"train.learning_rate": 0.01},
        }
    )


def _ended(redis_client: redis.Redis, study_id: str) -> StudyCompleted:
    [delivery] = [d for d in EventBus(redis_client).read() if isinstance(d.event, StudyCompleted)]
    assert isinstance(delivery.event, StudyCompleted)
    return delivery.event


def test_a_final_evaluation_that_fails_still_ends_the_study_failed_with_the_reason(
    redis_client: redis.Redis, data_root: Path, spec: StudySpec
) -> None:
    """The best trial's checkpoints are gone (a disk cleaned by hand): the evaluation fails,
    and the study still ends, failed, naming why; the bot hears of it."""
    studies = _study(redis_client, spec, "st-gone", owner=123456789012345678)
    studies.save_trial("st-gone", _completed("st-gone", 1, 2.5))
    studies.save_trial("st-gone", _completed("st-gone", 2, None, state="PRUNED"))
    layout = DataLayout(data_root)

    result = finish_study(studies, EventBus(redis_client), layout, "st-gone", storage_url=None)

    assert result == {"study_id": "st-gone", "status": "failed", "report": None}
    assert studies.status("st-gone") is RunStatus.FAILED
    message = studies.runs.message("st-gone")
    assert message is not None
    assert message.startswith("1 completed, 1 pruned, 0 failed; best trial 0: eval_loss 2.5000")
    assert message.endswith("evaluation failed: trial st-gone-t0001 has no checkpoint to evaluate")
    ended = _ended(redis_client, "st-gone")
    assert (ended.user_id, ended.payload.n_completed, ended.payload.n_pruned) == (
        123456789012345678,
        1,
        1,
    )
    assert ended.payload.best_trial_number == 0 and ended.payload.best_value == 2.5
    assert not (layout.study_dir("st-gone") / "evaluation_report.json").exists()

    # evaluated again on request (`trainctl study evaluate`): an ended study keeps its status
    studies.save_trial("st-gone", _completed("st-gone", 3, 1.5))
    again = finish_study(studies, EventBus(redis_client), layout, "st-gone", storage_url=None)
    assert again["status"] == "failed" and studies.status("st-gone") is RunStatus.FAILED
    assert studies.runs.message("st-gone") == message  # the first ending's words stand


def test_a_study_without_a_completed_trial_fails_unless_it_was_cancelled(
    redis_client: redis.Redis, data_root: Path, spec: StudySpec
) -> None:
    layout, bus = DataLayout(data_root), EventBus(redis_client)
    studies = _study(redis_client, spec, "st-none", owner=None)
    studies.save_trial("st-none", _completed("st-none", 1, None, state="FAIL"))
    # an attempt that died after Optuna asked its trial leaves it running there for ever
    layout.study_dir("st-none").mkdir(parents=True)
    orphan = open_study("st-none", spec, make_storage(layout.study_dir("st-none")))
    orphan.ask()

    assert finish_study(studies, bus, layout, "st-none", storage_url=None)["status"] == "failed"
    assert studies.runs.message("st-none") == "0 completed, 0 pruned, 1 failed"
    reopened = open_study("st-none", spec, make_storage(layout.study_dir("st-none")))
    assert [t.state.name for t in reopened.get_trials()] == ["FAIL"]  # the orphan failed
    ended = _ended(redis_client, "st-none")
    assert ended.user_id is None and ended.payload.best_trial_number is None
    assert ended.payload.best_params == {}

    studies.create("st-stop", spec, user_id=None)
    studies.cancel("st-stop")
    assert finish_study(studies, bus, layout, "st-stop", storage_url=None)["status"] == "cancelled"
    assert studies.status("st-stop") is RunStatus.CANCELLED


def test_a_measured_familys_test_report_is_read_and_one_without_it_refused(
    data_root: Path,
) -> None:
    """Dual-agent and classifier trials measure their test split as they end; a best trial
    whose manifest holds neither report cannot be evaluated."""
    payload = study_payload("tok", n_trials=2, parallelism=1)
    payload["base"] = dual_agent_spec()
    payload["search_space"] = {
        "train.learning_rate": {"type": "log_uniform", "low": 1e-3, "high": 5e-2}
    }
    spec = validate_study(payload)
    layout = DataLayout(data_root)
    best = _completed("st-da", 1, 0.5)
    write_run_manifest(layout.run_dir(best.run_id), {"kind": "not measured"})
    with pytest.raises(AppError) as refused:
        evaluate_checkpoint(layout, spec, best, layout.checkpoints_dir(best.run_id))
    assert refused.value.code is ErrorCode.DATA_NOT_FOUND
    assert refused.value.message == "trial st-da-t0001 has no test report in its manifest"

    # a classifier trial's test report: its headline figures, read, not measured again
    test = ClassificationMetrics(num_examples=4, accuracy=0.75, macro_f1=0.7, per_class={})
    record = ClassifierRecord(
        dataset_id="ds",
        labels=["ec2", "s3"],
        best_step=10,
        best_val_accuracy=0.8,
        test=test,
        baseline_test=None,
        confusion=[[2, 0], [1, 1]],
        latency=LatencyReport(p50_ms=1.5, p95_ms=3.0, samples=4, threads=1),
        size_bytes=1000,
    )
    manifest = read_run_manifest(layout.run_manifest(best.run_id))
    write_manifest(
        layout.run_manifest(best.run_id), manifest.model_copy(update={"classifier": record})
    )
    metrics = evaluate_checkpoint(layout, spec, best, layout.checkpoints_dir(best.run_id))
    assert metrics == {
        "test/accuracy": 0.75,
        "test/macro_f1": 0.7,
        "test/p50_ms": 1.5,
        "test/p95_ms": 3.0,
        "model/size_bytes": 1000.0,
    }


def test_no_plot_is_drawn_before_a_trial_completed(data_root: Path, spec: StudySpec) -> None:
    study = open_study("st-empty", spec, make_storage(data_root))
    assert draw_plots(study, data_root) == []
    assert not list(data_root.glob("*.png"))


def _weights(layout: DataLayout, run_id: str, size: int, *, final: bool = True) -> None:
    """A trial's folders as retention sees them: checkpoints and (once it ended whole) its
    final weights on disk."""
    folders = [layout.checkpoints_dir(run_id), *([layout.model_dir(run_id)] if final else [])]
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "weights.bin").write_bytes(b"w" * size)


def test_retention_keeps_the_best_trials_weights_and_removes_every_other_ended_trials(
    redis_client: redis.Redis,
    data_root: Path,
    spec: StudySpec,
    caplog: pytest.LogCaptureFixture,
) -> None:
    layout = DataLayout(data_root)
    studies = _study(redis_client, spec, "st-keep", owner=None)
    first, worse, better, pruned = (
        _completed("st-keep", 1, 2.0),
        _completed("st-keep", 2, 3.0),
        _completed("st-keep", 3, 1.0),
        _completed("st-keep", 4, None, state="PRUNED"),
    )
    for trial in (first, worse, better):
        _weights(layout, trial.run_id, 1000)
    _weights(layout, pruned.run_id, 1000, final=False)  # pruned: checkpoints, no final weights

    def on_disk() -> list[str]:
        return sorted(p.name for p in layout.runs_dir.iterdir() if any(p.iterdir()))

    with caplog.at_level(logging.INFO, logger=retention.__name__):
        assert retain_study_checkpoints(layout, studies, "st-keep", spec, first)  # the first best
        assert on_disk() == ["st-keep-t0001", "st-keep-t0002", "st-keep-t0003", "st-keep-t0004"]
        assert not retain_study_checkpoints(layout, studies, "st-keep", spec, worse)
        assert on_disk() == ["st-keep-t0001", "st-keep-t0003", "st-keep-t0004"]
        assert retain_study_checkpoints(layout, studies, "st-keep", spec, better)  # replaces it
        assert on_disk() == ["st-keep-t0003", "st-keep-t0004"]
        assert not retain_study_checkpoints(layout, studies, "st-keep", spec, pruned)
        assert on_disk() == ["st-keep-t0003"]
    assert studies.kept_trial("st-keep") == better
    freed = [
        int(getattr(r, "freed_bytes", 0))
        for r in caplog.records
        if r.message == "study checkpoints pruned"
    ]
    # checkpoints and weights of each trial that went (the old best's checkpoint index too)
    assert freed[0] == 2000 and freed[1] > 2000 and freed[2] == 1000


def test_the_study_lock_has_one_holder_and_gives_up_after_its_wait(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "studies:st-lock:lock"
    with study_lock(redis_client, "st-lock"):
        holder = redis_client.get(key)
        assert holder is not None
        monkeypatch.setattr(retention, "LOCK_WAIT_S", 0.1)
        with pytest.raises(AppError) as busy, study_lock(redis_client, "st-lock"):
            pytest.fail("a second holder got the lock")
        assert busy.value.code is ErrorCode.CONFLICT
        assert busy.value.message == "study st-lock stayed locked"
        assert redis_client.get(key) == holder  # the refused one released nothing
        # the lock expired and another worker took it: leaving must not release theirs
        redis_client.set(key, "another holder")
    assert redis_client.get(key) == b"another holder"
    redis_client.delete(key)
    with study_lock(redis_client, "st-lock"):
        pass
    assert not redis_client.exists(key)


def test_a_trials_share_counts_its_files_and_the_disks_reserve(tmp_path: Path) -> None:
    folder = tmp_path / "trial"
    (folder / "step-10").mkdir(parents=True)
    (folder / "step-10" / "model.safetensors").write_bytes(b"x" * 3000)
    (folder / "index.json").write_bytes(b"{}")
    # a checkpoint pruned while the folder is walked: a link whose target is gone counts 0
    os.symlink(folder / "gone", folder / "step-10" / "vanished.bin")
    assert tree_bytes(folder) == 3002

    free, disk_total = disk_usage(folder)
    over, reported_total = share_probe(1000 / GB, 0.0)(folder)  # a share of 1000 bytes
    assert reported_total == 0  # make_room's own fraction rule then reads "free >= needed"
    assert over == 1000 - 3002  # over its share: the trial prunes before it writes
    reserved, _ = share_probe(1e6, 1.0)(folder)  # a huge share, the whole disk kept free
    assert abs(reserved - (free - disk_total)) < 0.01 * disk_total and reserved < 0
