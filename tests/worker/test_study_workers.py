"""Fault tests of studies with real worker processes: two workers share one study on the
machine's PostgreSQL (a throwaway database), one of them is killed mid-trial, and the study
still completes: the dead worker's trial is requeued, re-attached to its Optuna trial and
resumed from its checkpoint by the other worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import redis
import sqlalchemy

from platform_core.event_bus import EventBus
from platform_core.events import JobStarted
from platform_core.json_types import JsonObject
from platform_core.queue import TRAINING_QUEUE, requeue_stale_runs
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.studies import StudyStore
from platform_core.study_specs import validate_study
from tests.processes import children
from tests.worker.test_studies import study_payload, tokenizer
from trainer_worker.checkpoints import list_checkpoints
from trainer_worker.studies.storage import make_storage

__all__ = ["tokenizer"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).parents[2]
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
# a live trial beats every 5 s (defaults.HEARTBEAT_INTERVAL_S): older than this, it is dead
# (with room for a beat delayed by a loaded machine)
STALE_AFTER_S = 12.0


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL, dropped afterwards."""
    name = f"optuna_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(
        f"postgresql+psycopg2://{POSTGRES.split('://', 1)[1]}/postgres",
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(
                sqlalchemy.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                ),
                {"n": name},
            )
            connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def _worker(data_root: Path, redis_url: str, storage_url: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP__")}
    env.update(
        {
            "APP__DATA_ROOT": str(data_root),
            "REDIS_URL": redis_url,
            "APP__STUDIES__STORAGE_URL": storage_url,
            "PYTHONPATH": str(ROOT),
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "trainer_cli", "worker", "--queues", TRAINING_QUEUE],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=(data_root / f"worker-{uuid.uuid4().hex[:6]}.log").open("wb"),
    )


def _kill_with_children(pid: int) -> None:
    for victim in [pid, *children(pid)]:
        os.kill(victim, signal.SIGKILL)


def _wait(condition: object, timeout_s: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_workers_on_postgres_share_a_study_and_survive_one_killed_mid_trial(
    redis_client: redis.Redis, redis_url: str, data_root: Path, tokenizer: str, postgres_url: str
) -> None:
    # long enough that the victim is still training when its first checkpoint appears
    train: JsonObject = {"max_steps": 150, "eval_every": 50, "checkpoint_every": 5}
    payload = study_payload(
        tokenizer, n_trials=3, parallelism=2, train=train, pruner={"type": "none"}
    )
    spec = validate_study(payload)
    studies, runs = StudyStore(redis_client), RunStateStore(redis_client)
    first, second = studies.create("st-pg", spec, user_id=None)

    workers = [_worker(data_root, redis_url, postgres_url) for _ in range(2)]
    try:
        _wait(
            lambda: all(runs.status(r) is RunStatus.RUNNING for r in (first, second)),
            120,
            "both workers to run a trial",
        )
        starts = [
            e
            for d in EventBus(redis_client).read(count=10_000)
            if isinstance(e := d.event, JobStarted)
        ]
        by_run = {e.run_id: e.payload.worker for e in starts}
        assert by_run[first] != by_run[second]  # two processes, one trial each
        victim_pid = workers[0].pid
        horses = {str(pid) for pid in children(victim_pid)}  # RQ forks a work horse per job
        victim_run = next(r for r, w in by_run.items() if w.rsplit(":", 1)[1] in horses)
        folder = data_root / "runs" / victim_run / "checkpoints"
        _wait(
            lambda: len(list_checkpoints(folder)) > 0,
            120,
            f"a checkpoint of {victim_run}: {runs.status(victim_run)} {runs.message(victim_run)}",
        )
        number_before = studies.trial(studies_id := "st-pg", victim_run)
        assert number_before is not None and number_before.trial_number is not None

        _kill_with_children(victim_pid)  # the machine dies: worker and work horse at once
        workers[0].wait(10)
        time.sleep(STALE_AFTER_S + 0.5)
        requeued = requeue_stale_runs(redis_client, stale_after_s=STALE_AFTER_S)
        states = {r: runs.status(r) for r in studies.trial_run_ids("st-pg")}
        assert requeued == [victim_run], f"{requeued} {states}"

        _wait(lambda: studies.status(studies_id).is_terminal, 240, "the study to end")
    finally:
        for worker in workers:
            if worker.poll() is None:
                _kill_with_children(worker.pid)
                worker.wait(10)

    view = studies.view("st-pg")
    assert view.status is RunStatus.COMPLETED, view.message
    assert [t.state for t in view.trials] == ["COMPLETE"] * 3
    resumed = next(t for t in view.trials if t.run_id == victim_run)
    assert resumed.trial_number == number_before.trial_number  # re-attached, not re-asked
    assert runs.attempts(victim_run) == 2
    storage = make_storage(data_root / "studies" / "st-pg", postgres_url)
    stored = optuna.load_study(study_name="st-pg", storage=storage)
    assert sorted(t.state.name for t in stored.trials) == ["COMPLETE"] * 3  # no orphan
    assert stored.best_value == pytest.approx(view.best.value if view.best else None)
    assert (data_root / "studies" / "st-pg" / "evaluation_report.json").is_file()
    assert not (data_root / "studies" / "st-pg" / "optuna.journal").exists()  # on PostgreSQL
