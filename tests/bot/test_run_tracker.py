from __future__ import annotations

from platform_core.events import JobFailed, MetricsCompleted, MetricsEval
from tests.bot import factories
from trainer_bot.run_tracker import RunSnapshot


def test_progress_events_fold_into_the_latest_figures() -> None:
    snapshot = RunSnapshot("run-1")
    assert snapshot.status == "queued"
    snapshot.update(factories.job_progress(step=10, total=100))
    assert snapshot.status == "running"  # progress: it runs (watched mid-run, it saw no start)
    assert (snapshot.step, snapshot.total_steps, snapshot.fraction) == (10, 100, 0.1)
    assert snapshot.eta_s == 90.0
    snapshot.update(factories.metrics_progress(step=20, loss=2.0, eta_s=None))
    assert (snapshot.step, snapshot.loss, snapshot.eta_s, snapshot.fraction) == (20, 2.0, 90.0, 0.2)
    assert snapshot.tokens_per_s == 12_345.6
    snapshot.update(factories.metrics_progress(step=30, loss=1.5, eta_s=40.0))
    assert snapshot.eta_s == 40.0
    snapshot.update(factories.checkpoint())
    assert snapshot.last_checkpoint_step == 50
    snapshot.update(factories.queued())  # not a figure: nothing changes
    assert (snapshot.total_steps, snapshot.status) == (100, "running")


def test_evals_track_the_best_and_say_when_it_improved() -> None:
    snapshot = RunSnapshot("run-1")
    assert snapshot.update(factories.evaluated())
    assert (snapshot.eval_loss, snapshot.perplexity) == (2.0, 7.389)
    assert not snapshot.update(factories.evaluated(step=80))  # the same loss: no new best
    better = factories.like(MetricsEval, "run-1", step=90, eval_loss=1.0, perplexity=2.7)
    assert snapshot.update(better)
    assert snapshot.best_eval_loss == 1.0


def test_the_run_average_is_its_one_tokens_per_second_figure_once_finished() -> None:
    snapshot = RunSnapshot("run-1")
    snapshot.update(factories.metrics_progress(step=99))
    done = factories.like(MetricsCompleted, "run-1", steps=100, tokens_per_s=800.0)
    snapshot.update(done)
    assert (snapshot.step, snapshot.tokens_per_s) == (100, 800.0)
    snapshot.update(factories.completed())
    assert snapshot.status == "completed"
    assert snapshot.fraction == 1.0
    assert snapshot.ended_at is not None


def test_a_retrying_failure_does_not_end_the_run() -> None:
    snapshot = RunSnapshot("run-1", status="running")
    retrying = factories.like(
        JobFailed, "run-1", error_code="OUT_OF_MEMORY", message="x", retrying=True
    )
    snapshot.update(retrying)
    assert (snapshot.status, snapshot.ended_at) == ("running", None)
    snapshot.update(factories.failed())
    assert snapshot.status == "failed"


def test_a_snapshot_survives_a_json_round_trip() -> None:
    snapshot = RunSnapshot("run-1", step=5, total_steps=10, last_checkpoint_step=4)
    restored = RunSnapshot.from_json(snapshot.to_json())
    assert restored == snapshot
    assert RunSnapshot.from_json('{"run_id": "run-1", "from_a_newer_bot": 1}').run_id == "run-1"
