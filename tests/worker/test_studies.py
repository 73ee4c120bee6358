"""Studies end to end on a real Redis with real (tiny) training: trials as jobs on the
training queue, median pruning in the loop, Optuna's journal storage, the study's retention
and its final evaluation."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from pydoc_data.topics import topics

import optuna
import pytest
import redis
from rq import Queue, SimpleWorker

from platform_core.event_bus import EventBus
from platform_core.events import StudyCompleted, StudyStarted, StudyTrialCompleted
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.queue import TRAINING_QUEUE, enqueue_job, requeue_stale_runs
from platform_core.redis_connection import connect
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.studies import StudyStore
from platform_core.study_api import HISTORY_PNG, IMPORTANCE_PNG
from platform_core.study_specs import validate_study
from tests.dead_workers import died_running
from tests.worker.dual_agent_helpers import dual_agent_spec
from tests.worker.test_jobs_train_model import worker_logging  # logs as `trainctl worker`
from trainer_worker import defaults
from trainer_worker.checkpoints import list_checkpoints
from trainer_worker.studies.finalize import REPORT_FILE
from trainer_worker.studies.storage import JOURNAL_FILE

__all__ = ["worker_logging"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def tokenizer(redis_client: redis.Redis, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)
    text = "\n\n".join(topics[key] for key in sorted(topics))[:30_000]
    (data_root / "corpus.txt").write_text(text, encoding="utf-8")
    spec: JsonObject = {"kind": "char", "corpus": {"path": "corpus.txt"}}
    enqueue_job(redis_client, "train_tokenizer", "tok", spec)
    _work(redis_client)
    return "tok"


def _work(client: redis.Redis) -> None:
    SimpleWorker([Queue(TRAINING_QUEUE, connection=client)], connection=client).work(burst=True)


def study_payload(
    tokenizer_id: str,
    *,
    n_trials: int,
    parallelism: int,
    train: JsonObject | None = None,
    pruner: JsonObject | None = None,
) -> JsonObject:
    """A study of tiny char_lstm trials: 20 steps, an eval every 5, pruning from step 5
    (`train` and `pruner` override)."""
    settings: JsonObject = {
        "max_steps": 20,
        "batch_size": 8,
        "block_size": 32,
        "learning_rate": 1e-2,
        "min_lr": 0.0,
        "warmup_steps": 0,
        "eval_every": 5,
        "eval_batches": 2,
        "checkpoint_every": 10,
        "progress_every_steps": 10,
        "device": "cpu",
        "seed": 5,
    }
    settings.update(train or {})
    base: JsonObject = {
        "model": {"family": "char_lstm", "preset": "tiny"},
        "tokenizer_id": tokenizer_id,
        "corpus": {"path": "corpus.txt"},
        "train": settings,
        "sample_prompts": [],
    }
    return {
        "name": "tiny-lstm",
        "base": base,
        "search_space": {
            "train.learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 5e-2},
            "train.batch_size": {"type": "categorical", "choices": [4, 8]},
        },
        "n_trials": n_trials,
        "parallelism": parallelism,
        "sampler": {"seed": 11, "n_startup_trials": 4},
        "pruner": pruner or {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 1},
    }


def test_a_study_of_twenty_tiny_trials_prunes_some_and_keeps_only_the_best_checkpoint(
    redis_client: redis.Redis, data_root: Path, tokenizer: str
) -> None:
    spec = validate_study(study_payload(tokenizer, n_trials=20, parallelism=2))
    studies = StudyStore(redis_client)
    first = studies.create("st-a", spec, user_id=9)
    assert first == ["st-a-t0001", "st-a-t0002"]

    _work(redis_client)  # the trials enqueue their successors, the last one the finalization

    view = studies.view("st-a")
    assert view.status is RunStatus.COMPLETED, view.message
    assert len(view.trials) == 20
    states = [t.state for t in view.trials]
    assert "PRUNED" in states and "COMPLETE" in states, states
    assert "FAIL" not in states
    runs = RunStateStore(redis_client)
    for trial in view.trials:  # each trial is a run of its own, pruned ones end "pruned"
        expected = RunStatus.PRUNED if trial.state == "PRUNED" else RunStatus.COMPLETED
        assert runs.status(trial.run_id) is expected, runs.message(trial.run_id)
    # Optuna's own record agrees, in the journal file under the study folder
    folder = data_root / "studies" / "st-a"
    stored = optuna.load_study(
        study_name="st-a",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(folder / JOURNAL_FILE))
        ),
    )
    by_number = {t.number: t for t in stored.trials}
    assert len(by_number) == 20
    for trial in view.trials:
        assert trial.trial_number is not None
        assert by_number[trial.trial_number].state.name == trial.state
    assert view.best is not None
    assert view.best.value == pytest.approx(stored.best_value)

    # only the best trial's best checkpoint is left on disk
    with_checkpoints = {
        t.run_id: list_checkpoints(data_root / "runs" / t.run_id / "checkpoints")
        for t in view.trials
    }
    kept = {run_id: c for run_id, c in with_checkpoints.items() if c}
    assert list(kept) == [view.best.run_id]
    assert len(kept[view.best.run_id]) == 1

    report = json.loads((folder / REPORT_FILE).read_text())
    assert report["best_trial"]["run_id"] == view.best.run_id
    assert report["best_trial"]["params"] == view.best.params
    checkpoint = data_root / report["checkpoint"]["path"]
    assert checkpoint == kept[view.best.run_id][0]
    weights = (checkpoint / "model.safetensors").read_bytes()
    assert report["checkpoint"]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert 0 < report["test_metrics"]["eval_loss"] < 10
    for png in (HISTORY_PNG, IMPORTANCE_PNG):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    bus = EventBus(redis_client)
    events = [d.event for d in bus.read(count=100_000) if d.event.run_id == "st-a"]
    assert sum(isinstance(e, StudyStarted) for e in events) == 1
    trial_events = [e for e in events if isinstance(e, StudyTrialCompleted)]
    assert sorted(e.payload.trial_number for e in trial_events) == list(range(20))
    assert all(e.user_id == 9 for e in events)
    done = [e for e in events if isinstance(e, StudyCompleted)]
    assert len(done) == 1
    assert done[0].payload.n_completed + done[0].payload.n_pruned == 20
    assert done[0].payload.best_trial_number == view.best.trial_number


def _died_after_checkpoints(client: redis.Redis, layout: DataLayout, run_id: str) -> Path:
    """The trial's one attempt wrote checkpoints, then its worker died (its last beat at
    t=100); its checkpoints folder."""
    step = layout.checkpoints_dir(run_id) / "step-00000010"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes(b"w" * 4096)
    died_running(client, run_id, attempts=1, beat_at=100.0)
    return layout.checkpoints_dir(run_id)


def test_trials_given_up_on_leave_no_checkpoint_and_the_study_completes(
    redis_client: redis.Redis, data_root: Path, tokenizer: str
) -> None:
    """Trial 1 dies on its only attempt (APP__WORKER__MAX_ATTEMPTS=1) after writing
    checkpoints: the sweep gives up on it, and trial 2, which that issues, removes them as it
    starts, before it writes its own. Trial 3 dies too; the finalization removes its
    checkpoints. On disk at the end: trial 2's best checkpoint only."""
    payload = study_payload(tokenizer, n_trials=3, parallelism=1, pruner={"type": "none"})
    studies = StudyStore(redis_client)
    layout = DataLayout(data_root)
    [first] = studies.create("st-dead", validate_study(payload), user_id=None)
    given_up = _died_after_checkpoints(redis_client, layout, first)
    assert requeue_stale_runs(redis_client, stale_after_s=60, now=200.0, max_attempts=1) == []

    worker = SimpleWorker([Queue(TRAINING_QUEUE, connection=redis_client)], connection=redis_client)
    worker.work(burst=True, max_jobs=1)  # trial 2, not yet the rest
    assert studies.runs.status("st-dead-t0002") is RunStatus.COMPLETED
    assert not given_up.exists()
    third = _died_after_checkpoints(redis_client, layout, "st-dead-t0003")
    assert requeue_stale_runs(redis_client, stale_after_s=60, now=200.0, max_attempts=1) == []
    assert third.is_dir()  # until the finalization, queued by that give-up, runs

    _work(redis_client)

    view = studies.view("st-dead")
    assert view.status is RunStatus.COMPLETED, view.message
    assert [t.state for t in view.trials] == ["FAIL", "COMPLETE", "FAIL"]
    assert not third.exists()
    on_disk = sorted(
        p.relative_to(data_root)
        for p in (data_root / "runs").rglob("*")
        if p.is_file() and "checkpoints" in p.parts
    )
    kept = list_checkpoints(layout.checkpoints_dir("st-dead-t0002"))
    assert len(kept) == 1
    assert all(path.parts[:2] == ("runs", "st-dead-t0002") for path in on_disk), on_disk
    report = json.loads((data_root / "studies" / "st-dead" / REPORT_FILE).read_text())
    assert data_root / report["checkpoint"]["path"] == kept[0]


def test_cancelling_a_running_study_stops_its_running_trial_and_queues_no_more(
    redis_client: redis.Redis, redis_url: str, data_root: Path, tokenizer: str
) -> None:
    train: JsonObject = {"max_steps": 2000, "eval_every": 100, "checkpoint_every": 100}
    payload = study_payload(tokenizer, n_trials=5, parallelism=1, train=train)
    StudyStore(redis_client).create("st-c", validate_study(payload), user_id=None)
    cancelled: list[str] = []

    def cancel_once_training() -> None:  # the operator, while the worker trains trial 1
        client = connect(redis_url)
        runs = RunStateStore(client)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if runs.progress("st-c-t0001").get("step"):
                cancelled.extend(StudyStore(client).cancel("st-c"))
                break
            time.sleep(0.05)
        client.close()

    operator = threading.Thread(target=cancel_once_training)
    operator.start()
    _work(redis_client)
    operator.join()

    assert cancelled == ["st-c-t0001"]
    studies = StudyStore(redis_client)
    view = studies.view("st-c")
    assert view.status is RunStatus.CANCELLED, view.message
    assert [t.run_id for t in view.trials] == ["st-c-t0001"]  # no trial queued after it
    assert RunStateStore(redis_client).status("st-c-t0001") is RunStatus.CANCELLED
    assert view.trials[0].state == "FAIL"  # Optuna has no "cancelled": failed there
    assert int(RunStateStore(redis_client).progress("st-c-t0001")["step"]) < 2000


def test_a_dual_agent_study_trains_its_trials_as_dual_agent_runs_and_reports_their_test_figures(
    redis_client: redis.Redis, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every family runs as a trial: here the dual-agent model (its own tokenizer, generated
    posts); the study's report carries the best trial's measured test figures."""
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)
    base = dual_agent_spec(max_steps=10, eval_every=5, checkpoint_every=5, batch_size=8)
    dual = base["dual_agent"]
    assert isinstance(dual, dict)
    base["dual_agent"] = {**dual, "generated_posts": 120, "vocab_size": 300}
    spec = validate_study(
        {
            "name": "tiny-dual",
            "base": base,
            "search_space": {
                "train.learning_rate": {"type": "log_uniform", "low": 1e-3, "high": 1e-2}
            },
            "n_trials": 2,
            "parallelism": 1,
            "sampler": {"seed": 3, "n_startup_trials": 2},
            "pruner": {"type": "none"},
        }
    )
    StudyStore(redis_client).create("st-dual", spec, user_id=None)
    _work(redis_client)

    view = StudyStore(redis_client).view("st-dual")
    assert view.status is RunStatus.COMPLETED, view.message
    assert [t.state for t in view.trials] == ["COMPLETE", "COMPLETE"]
    assert view.best is not None
    manifest = json.loads((data_root / "runs" / view.best.run_id / "manifest.json").read_text())
    assert manifest["spec"]["model"]["family"] == "dual_agent"
    report = json.loads((data_root / "studies" / "st-dual" / REPORT_FILE).read_text())
    assert report["model_family"] == "dual_agent"
    assert report["test_metrics"] == manifest["dual_agent"]["test_metrics"]
    assert "test/criteria_matcher/f1" in report["test_metrics"]
