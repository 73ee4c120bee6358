from __future__ import annotations

import discord
import pytest

from platform_core.api_models import RunList, RunMetrics, RunProgress, RunPublic
from platform_core.events import MetricsCompleted
from platform_core.run_state import RunStatus
from tests.bot import factories
from trainer_bot.embeds import (
    NONE,
    event_embed,
    format_bytes,
    format_duration,
    format_metric,
    format_rate,
    live_embed,
    progress_bar,
    runs_embed,
    status_embed,
)
from trainer_bot.run_tracker import RunSnapshot


def fields(embed: discord.Embed) -> dict[str, str]:
    return {f.name or "": f.value or "" for f in embed.fields}


def test_progress_bar() -> None:
    assert progress_bar(0.35, width=10) == "███░░░░░░░ 35%"
    assert progress_bar(1.0, width=4) == "████ 100%"
    assert progress_bar(1.7, width=4) == "████ 100%"
    assert progress_bar(-1, width=4) == "░░░░ 0%"
    assert progress_bar(None) == NONE
    assert progress_bar(float("nan")) == NONE


def test_durations_numbers_and_sizes() -> None:
    assert format_duration(7500) == "2h 05m"
    assert format_duration(187) == "3m 07s"
    assert format_duration(42.4) == "42s"
    assert format_duration(-3) == "0s"
    assert format_duration(None) == NONE
    assert format_duration(float("inf")) == NONE
    assert format_metric(2.345678) == "2.346"
    assert format_metric(None) == NONE
    assert format_rate(12345.6) == "12,346"
    assert format_rate(None) == NONE
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 * 1024 * 1024) == "3.0 MiB"
    assert format_bytes(5 * 1024**4) == "5120.0 GiB"


def test_lifecycle_embeds_name_the_run_and_its_figures() -> None:
    queued = event_embed(factories.queued())
    assert queued.title == "Queued · run-1"
    assert queued.footer.text == "trainer.job.queued.v1"
    assert fields(queued) == {"Job": "train_model", "Queue": "training"}
    assert fields(event_embed(factories.started())) == {"Worker": "w1", "Attempt": "1"}
    resumed = event_embed(factories.started(resumed_from_step=1200))
    assert fields(resumed)["Resumed from step"] == "1,200"
    failed = event_embed(factories.failed())
    assert failed.colour == discord.Colour.red()
    assert failed.description == "CUDA out of memory"
    assert fields(failed) == {"Error": "OUT_OF_MEMORY", "Retrying": "no"}
    cancelled = event_embed(factories.cancelled())
    assert fields(cancelled) == {"Stopped": "cooperative", "At step": "40"}


def test_completion_carries_the_latest_figures() -> None:
    snapshot = RunSnapshot("run-1", step=100, total_steps=100, loss=1.5, perplexity=4.5)
    snapshot.tokens_per_s = 999.0
    embed = event_embed(factories.completed(), snapshot)
    assert embed.colour == discord.Colour.green()
    assert fields(embed) == {
        "Duration": "1h 02m",
        "Step": "100 / 100",
        "Loss": "1.5",
        "Perplexity": "4.5",
        "Tokens/s": "999",
    }
    assert fields(event_embed(factories.completed())) == {"Duration": "1h 02m"}


def test_metric_embeds() -> None:
    config = fields(event_embed(factories.configured()))
    assert config["Model"] == "char_lstm (tiny)"
    assert config["Parameters"] == "123,456"
    assert config["Device"] == "cpu · fp32"
    evaluated = fields(event_embed(factories.evaluated()))
    assert evaluated == {"Step": "50", "Eval loss": "2", "Perplexity": "7.389"}
    saved = fields(event_embed(factories.checkpoint()))
    # the file name only: the server's folders are nobody's business in a DM
    assert saved == {"Step": "50", "File": "step-50.pt", "Size": "3.0 MiB", "Best so far": "2"}
    assert "Best so far" not in fields(event_embed(factories.checkpoint(is_best=False)))
    finished = fields(event_embed(factories.metrics_completed()))
    assert finished["Perplexity"] == "4.95"
    assert finished["Tokens/s"] == NONE


def test_study_embeds() -> None:
    assert event_embed(factories.study_started()).description == "lr sweep"
    trial = event_embed(factories.trial_completed())
    assert trial.title == "Trial 3 · study-1"
    assert fields(trial) == {"State": "COMPLETE", "Value": "1.25"}
    done = fields(event_embed(factories.study_completed()))
    assert done["Trials"] == "6 done, 1 pruned, 1 failed"
    assert done["Best trial"] == "#3: 1.25"
    assert done["Best params"] == "layers=2, lr=0.001"
    assert "Best trial" not in fields(event_embed(factories.study_completed(best=None)))


def test_a_progress_event_rendered_directly_is_a_plain_update() -> None:
    assert event_embed(factories.metrics_progress()).title == "Update · run-1"


def test_live_embed_shows_bar_step_losses_rate_checkpoint_and_eta() -> None:
    snapshot = RunSnapshot(
        "run-1",
        status="running",
        step=30,
        total_steps=100,
        fraction=0.3,
        eta_s=125,
        loss=2.25,
        eval_loss=2.5,
        tokens_per_s=1234.4,
        last_checkpoint_step=25,
    )
    embed = live_embed(snapshot)
    assert embed.title == "run-1 · running"
    assert embed.description == "██████░░░░░░░░░░░░░░ 30%"
    assert fields(embed) == {
        "Step": "30 / 100",
        "Loss": "2.25",
        "Eval loss": "2.5",
        "Tokens/s": "1,234",
        "Last checkpoint": "step 25",
        "ETA": "2m 05s",
    }


def test_a_finished_runs_live_embed_shows_its_end_time_not_an_eta() -> None:
    snapshot = RunSnapshot("run-1")
    snapshot.update(factories.completed())
    shown = fields(live_embed(snapshot))
    assert "ETA" not in shown
    assert shown["Ended"].startswith("<t:")
    assert snapshot.status == "completed"


@pytest.mark.parametrize("status", ["queued", "running", "completed", "failed", "cancelled"])
def test_status_embed_colours_by_status(status: str) -> None:
    run = RunPublic.model_validate({"run_id": "run-9", "status": status})
    embed = status_embed(run)
    assert embed.title == f"run-9 · {status}"
    expected = {"Ended": NONE} if status in {"completed", "failed", "cancelled"} else {"ETA": NONE}
    assert fields(embed) == expected


def test_status_embed_of_a_live_and_a_finished_run() -> None:
    live = RunPublic(
        run_id="run-2",
        kind="train_model",
        status=RunStatus.RUNNING,
        eta_s=60,
        heartbeat_age_s=3,
        progress=RunProgress(
            step=5, total_steps=10, fraction=0.5, loss=2.0, tokens_per_s=100, last_checkpoint_step=4
        ),
    )
    embed = status_embed(live)
    assert embed.description == "██████████░░░░░░░░░░ 50%"
    assert fields(embed) == {
        "Job": "train_model",
        "Step": "5 / 10",
        "Loss": "2",
        "Tokens/s": "100",
        "Last checkpoint": "step 4",
        "ETA": "1m 00s",
        "Last heartbeat": "3s ago",
    }
    done = RunPublic(
        run_id="run-3",
        status=RunStatus.COMPLETED,
        message="finished 10 steps",
        last_heartbeat=1_796_000_000.0,
        heartbeat_age_s=510.0,
        progress=RunProgress(step=10, total_steps=10, tokens_per_s=140.0),
        metrics=RunMetrics(
            final_loss=1.0, final_perplexity=2.7, best_eval_loss=0.9, tokens_per_s=120.0
        ),
    )
    shown = fields(status_embed(done))
    assert shown["Final loss"] == "1"
    assert shown["Message"] == "finished 10 steps"
    # a finished run: when it ended, not how long ago its heartbeat was; one tokens/s figure
    assert shown["Ended"] == "<t:1796000000:f> (2026-11-30 00:53:20 UTC)"
    assert "Last heartbeat" not in shown
    assert "ETA" not in shown
    assert shown["Tokens/s"] == "120"


def test_runs_embed_pages() -> None:
    runs = [
        RunPublic(run_id="run-a", status=RunStatus.RUNNING, kind="train_model"),
        RunPublic(run_id="run-b", status=RunStatus.COMPLETED),
    ]
    embed = runs_embed(RunList(items=runs, total=12, limit=2, offset=4))
    assert embed.description == "`run-a` · running · train_model\n`run-b` · completed"
    assert embed.footer.text == "5-6 of 12"
    empty = runs_embed(RunList(items=[], total=0, limit=10, offset=0))
    assert empty.description == "No runs yet."
    assert empty.footer.text == "0-0 of 0"


def test_live_embed_of_a_run_without_figures_yet() -> None:
    embed = live_embed(RunSnapshot("run-2"))
    assert embed.title == "run-2 · queued"
    assert embed.description == NONE
    assert set(fields(embed).values()) == {NONE}


def test_a_dual_agent_completion_shows_its_f1_against_the_baseline() -> None:
    snapshot = RunSnapshot("run-1", step=300, total_steps=300, loss=0.01)
    done = factories.like(
        MetricsCompleted,
        "run-1",
        metrics={
            "test/criteria_matcher/f1": 0.7123,
            "baseline/criteria_matcher/f1": 0.4491,
            "test/evidence_binder/char_f1": 0.6402,
            "baseline/evidence_binder/char_f1": 0.3921,
        },
    )
    snapshot.update(done)
    embed = event_embed(factories.completed(), snapshot)
    shown = fields(embed)
    assert shown["Criteria macro F1"] == "0.7123 (baseline 0.4491)"
    assert shown["Evidence char F1"] == "0.6402 (baseline 0.3921)"
    assert "Perplexity" not in shown
    assert fields(event_embed(done))["Criteria macro F1"] == "0.7123 (baseline 0.4491)"


def test_a_classifier_completion_shows_accuracy_and_macro_f1_against_the_baseline() -> None:
    metrics = {
        "test/accuracy": 0.9123,
        "test/macro_f1": 0.9,
        "test/p95_ms": 4.2,
        "baseline/accuracy": 0.9182,
        "baseline/macro_f1": 0.92,
    }
    shown = fields(event_embed(factories.like(MetricsCompleted, "run-1", metrics=metrics)))
    assert shown["Test accuracy"] == "0.9123 (baseline 0.9182)"
    assert shown["Test macro F1"] == "0.9 (baseline 0.92)"
    assert "Criteria macro F1" not in shown and "Perplexity" not in shown
