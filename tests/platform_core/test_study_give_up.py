"""A study trial the stale-run sweep ends (given up on, or cancelled while its worker was
dead) is counted for its study (once, whoever else counts it), so the study issues its next
trial or, for its last one, hands out its finalization; its checkpoints are left to whoever
runs next (`take_given_up`). Real Redis, the sweep driven directly."""

from __future__ import annotations

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus

from platform_core.queue import JOB_FUNCTIONS, TRAINING_QUEUE, request_cancel, requeue_stale_runs
from platform_core.run_state import RunStatus
from platform_core.studies import FINALIZE_FUNCTION, StudyStore
from platform_core.study_api import TrialRecord
from platform_core.study_specs import StudySpec
from tests.dead_workers import died_running

pytestmark = pytest.mark.integration
MAX_ATTEMPTS = 2
STUDY_TRIAL = JOB_FUNCTIONS["study_trial"]


def _spec(n_trials: int) -> StudySpec:
    return StudySpec.model_validate(
        {
            "name": "give-up",
            "base": {
                "model": {"family": "char_lstm", "preset": "tiny"},
                "tokenizer_id": "tok",
                "corpus": {"path": "corpus.txt"},
                "train": {"max_steps": 10, "eval_every": 5},
            },
            "search_space": {
                "train.learning_rate": {"type": "log_uniform", "low": 1e-3, "high": 3e-2},
            },
            "n_trials": n_trials,
            "parallelism": 1,
        }
    )


def _dies_every_attempt(client: redis.Redis, study_id: str, run_id: str, now: float) -> None:
    """The trial's attempts all start (Optuna gave it trial 0) and die with their worker."""
    StudyStore(client).save_trial(
        study_id,
        TrialRecord(run_id=run_id, ticket=1, trial_number=0, params={"train.learning_rate": 0.01}),
    )
    died_running(client, run_id, attempts=MAX_ATTEMPTS, beat_at=now)


def _sweep(client: redis.Redis, now: float) -> list[str]:
    return requeue_stale_runs(client, stale_after_s=60, now=now, max_attempts=MAX_ATTEMPTS)


def _queued_functions(client: redis.Redis) -> list[str]:
    queue = Queue(TRAINING_QUEUE, connection=client)
    return [str(job.func_name) for job in queue.jobs]


def test_the_last_trial_given_up_on_hands_out_the_finalization_once(
    redis_client: redis.Redis,
) -> None:
    studies = StudyStore(redis_client)
    [trial] = studies.create("st-gu", _spec(1), user_id=None)
    _dies_every_attempt(redis_client, "st-gu", trial, now=100.0)

    assert _sweep(redis_client, 200.0) == []  # given up on, not requeued
    assert studies.runs.status(trial) is RunStatus.FAILED
    record = studies.trial("st-gu", trial)
    assert record is not None and (record.state, record.trial_number) == ("FAIL", 0)
    assert _queued_functions(redis_client) == [FINALIZE_FUNCTION]
    view = studies.view("st-gu")
    assert view.best is None and [t.state for t in view.trials] == ["FAIL"]
    # its dead job is cancelled in RQ, which never runs it again
    assert Job.fetch(trial, connection=redis_client).get_status() is JobStatus.CANCELED
    # its checkpoints are for whoever runs next (a trial, or here the finalization) to remove
    assert studies.take_given_up("st-gu") == [trial]
    assert studies.take_given_up("st-gu") == []  # handed out once

    # counted once: cancelling now (which counts every ended trial) hands out nothing more
    assert studies.cancel("st-gu") == []
    assert studies.finish_trial("st-gu", trial) == "none"
    assert _queued_functions(redis_client) == [FINALIZE_FUNCTION]


def test_a_trial_given_up_on_issues_the_next_trial(redis_client: redis.Redis) -> None:
    studies = StudyStore(redis_client)
    [first] = studies.create("st-next", _spec(2), user_id=None)
    _dies_every_attempt(redis_client, "st-next", first, now=100.0)

    assert _sweep(redis_client, 200.0) == []
    assert studies.trial_run_ids("st-next") == [first, "st-next-t0002"]
    assert _queued_functions(redis_client) == [STUDY_TRIAL]
    assert studies.runs.status("st-next-t0002") is RunStatus.QUEUED
    assert studies.take_given_up("st-next") == [first]


def test_a_trial_already_counted_is_not_counted_again_nor_its_record_changed(
    redis_client: redis.Redis,
) -> None:
    """A trial whose record ended (its job told Optuna and applied the study's retention,
    then died before the run's status moved) keeps its record and its checkpoints (it may be
    the study's best); the count it already has is not repeated."""
    studies = StudyStore(redis_client)
    [trial] = studies.create("st-once", _spec(1), user_id=None)
    _dies_every_attempt(redis_client, "st-once", trial, now=100.0)
    done = TrialRecord(run_id=trial, ticket=1, trial_number=0, state="COMPLETE", value=1.5)
    studies.save_trial("st-once", done)
    assert studies.finish_trial("st-once", trial) == "finalize"

    assert _sweep(redis_client, 200.0) == []
    assert studies.trial("st-once", trial) == done
    assert _queued_functions(redis_client) == [FINALIZE_FUNCTION]  # still the one
    assert studies.take_given_up("st-once") == []


@pytest.mark.parametrize("cancelled", ["the trial", "its study"])
def test_a_trial_cancelled_while_its_worker_was_dead_is_counted_by_the_sweep(
    redis_client: redis.Redis, cancelled: str
) -> None:
    """Not the give-up path: a stale trial with a pending cancellation ends cancelled, and
    the sweep counts it (and hands its checkpoints to the finalization) as the give-up does:
    a study cancelled while its only trial's worker was dead still ends."""
    studies = StudyStore(redis_client)
    [trial] = studies.create("st-cx", _spec(2), user_id=None)
    _dies_every_attempt(redis_client, "st-cx", trial, now=100.0)
    if cancelled == "its study":
        assert studies.cancel("st-cx") == [trial]  # "requested": nobody left to see the flag
    else:
        assert request_cancel(redis_client, trial) == "requested"
    assert _sweep(redis_client, 200.0) == []
    assert studies.runs.status(trial) is RunStatus.CANCELLED
    record = studies.trial("st-cx", trial)
    assert record is not None and record.state == "FAIL"
    assert studies.take_given_up("st-cx") == [trial]
    # a cancelled study issues no more trials: its end; a trial cancelled alone: the next one
    expected = FINALIZE_FUNCTION if cancelled == "its study" else STUDY_TRIAL
    assert _queued_functions(redis_client) == [expected]
