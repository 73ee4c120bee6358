from __future__ import annotations

from tests.bot import factories
from trainer_bot.run_tracker import MAX_LOSS_POINTS, RunSnapshot


def test_progress_events_fold_into_the_latest_figures() -> None:
    snapshot = RunSnapshot("run-1")
    snapshot.update(factories.job_progress(step=10, total=100))
    assert (snapshot.step, snapshot.total_steps, snapshot.fraction) == (10, 100, 0.1)
    assert snapshot.eta_s == 90.0
    snapshot.update(factories.metrics_progress(step=20, loss=2.0, eta_s=None))
    assert (snapshot.step, snapshot.loss, snapshot.eta_s) == (20, 2.0, 90.0)
    assert snapshot.tokens_per_s == 12_345.6
    snapshot.update(factories.metrics_progress(step=30, loss=1.5, eta_s=40.0))
    assert snapshot.eta_s == 40.0
    snapshot.update(factories.evaluated())
    assert (snapshot.eval_loss, snapshot.perplexity) == (2.0, 7.389)
    snapshot.update(factories.queued())  # not a figure: nothing changes
    assert snapshot.losses == [(20, 2.0), (30, 1.5)]
    assert snapshot.total_steps == 100


def test_loss_history_skips_non_finite_and_stays_bounded() -> None:
    snapshot = RunSnapshot("run-1")
    snapshot.update(factories.metrics_progress(step=1, loss=float("nan")))
    assert snapshot.losses == []
    for step in range(3 * MAX_LOSS_POINTS):
        snapshot.update(factories.metrics_progress(step=step, loss=1.0))
    assert len(snapshot.losses) <= MAX_LOSS_POINTS
    assert snapshot.losses[0][0] == 0
    assert snapshot.losses[-1][0] == 3 * MAX_LOSS_POINTS - 1
