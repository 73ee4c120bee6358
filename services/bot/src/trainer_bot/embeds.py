"""Rendering: events, run status and run lists as Discord embeds, within Discord's limits.

Paths are never shown whole (a checkpoint is named by its file name only) and no corpus text
is ever rendered: events carry none, and run messages are the API's own words.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import PurePath

import discord

from platform_core.api_models import RunList, RunPublic
from platform_core.events import (
    Event,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobQueued,
    JobStarted,
    MetricsCheckpoint,
    MetricsCompleted,
    MetricsConfig,
    MetricsEval,
    StudyCompleted,
    StudyStarted,
    StudyTrialCompleted,
)
from trainer_bot.limits import clamp_embed
from trainer_bot.run_tracker import RunSnapshot

BAR_WIDTH = 20
NONE = "—"

QUEUED = discord.Colour.light_grey()
RUNNING = discord.Colour.blue()
SUCCESS = discord.Colour.green()
FAILURE = discord.Colour.red()
STOPPED = discord.Colour.orange()
STATUS_COLOURS = {
    "queued": QUEUED,
    "running": RUNNING,
    "completed": SUCCESS,
    "failed": FAILURE,
    "cancelled": STOPPED,
    "pruned": STOPPED,  # a study trial its pruner stopped: ended as designed
}


# ---- small formatters -----------------------------------------------------------------------


def progress_bar(fraction: float | None, width: int = BAR_WIDTH) -> str:
    """`███████░░░░░░░ 35%`; a dash when the fraction is unknown."""
    if fraction is None or not math.isfinite(fraction):
        return NONE
    fraction = min(1.0, max(0.0, fraction))
    filled = math.floor(fraction * width)
    return f"{'█' * filled}{'░' * (width - filled)} {fraction:.0%}"


def format_duration(seconds: float | None) -> str:
    """`2h 05m`, `3m 07s`, `42s`; a dash when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return NONE
    total = round(max(0.0, seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def format_metric(value: float | None, digits: int = 4) -> str:
    """A loss or perplexity with `digits` significant digits; a dash when unknown."""
    if value is None:
        return NONE
    return f"{value:.{digits}g}"


def format_rate(value: float | None) -> str:
    """Tokens per second, thousands separated."""
    return NONE if value is None else f"{value:,.0f}"


def format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns at GiB


def _step(step: int | None, total: int | None) -> str:
    if step is None:
        return NONE
    return f"{step:,}" if total is None else f"{step:,} / {total:,}"


def _embed(title: str, colour: discord.Colour, event: Event) -> discord.Embed:
    embed = discord.Embed(title=f"{title} · {event.run_id}", colour=colour, timestamp=event.ts)
    embed.set_footer(text=event.type)
    return embed


# ---- events ---------------------------------------------------------------------------------


def event_embed(event: Event, snapshot: RunSnapshot | None = None) -> discord.Embed:
    """The notice for one event (progress events are summarised instead, see
    `summary_embed`); `snapshot` adds the run's latest figures to a completion."""
    embed = _lifecycle(event, snapshot) or _metrics(event) or _study(event)
    if embed is None:
        embed = _embed("Update", RUNNING, event)  # progress events reach here only by mistake
    return clamp_embed(embed)


def _lifecycle(event: Event, snapshot: RunSnapshot | None) -> discord.Embed | None:
    if isinstance(event, JobQueued):
        embed = _embed("Queued", QUEUED, event)
        embed.description = event.payload.description or None
        embed.add_field(name="Job", value=event.payload.kind)
        embed.add_field(name="Queue", value=event.payload.queue)
    elif isinstance(event, JobStarted):
        embed = _embed("Started", RUNNING, event)
        embed.add_field(name="Worker", value=event.payload.worker)
        embed.add_field(name="Attempt", value=str(event.payload.attempt))
        if event.payload.resumed_from_step is not None:
            embed.add_field(name="Resumed from step", value=f"{event.payload.resumed_from_step:,}")
    elif isinstance(event, JobCompleted):
        embed = _embed("Completed", SUCCESS, event)
        embed.description = event.payload.message or None
        embed.add_field(name="Duration", value=format_duration(event.payload.duration_s))
        if snapshot is not None:
            _add_figures(embed, snapshot)
    elif isinstance(event, JobFailed):
        embed = _embed("Failed", FAILURE, event)
        embed.description = event.payload.message
        embed.add_field(name="Error", value=event.payload.error_code.value)
        embed.add_field(name="Retrying", value="yes" if event.payload.retrying else "no")
    elif isinstance(event, JobCancelled):
        embed = _embed("Cancelled", STOPPED, event)
        embed.description = event.payload.message or None
        embed.add_field(name="Stopped", value=event.payload.stage)
        embed.add_field(name="At step", value=_step(event.payload.step, None))
    else:
        return None
    return embed


def _metrics(event: Event) -> discord.Embed | None:
    if isinstance(event, MetricsConfig):
        config = event.payload
        embed = _embed("Configured", RUNNING, event)
        model = config.model_family + (f" ({config.preset})" if config.preset else "")
        embed.add_field(name="Model", value=model)
        embed.add_field(name="Parameters", value=f"{config.num_params:,}")
        embed.add_field(name="Device", value=f"{config.device} · {config.precision}")
        embed.add_field(name="Steps", value=f"{config.max_steps:,}")
        embed.add_field(name="Batch", value=str(config.batch_size))
        embed.add_field(name="Learning rate", value=f"{config.learning_rate:g}")
    elif isinstance(event, MetricsEval):
        embed = _embed("Evaluated", RUNNING, event)
        embed.add_field(name="Step", value=f"{event.payload.step:,}")
        embed.add_field(name="Eval loss", value=format_metric(event.payload.eval_loss))
        embed.add_field(name="Perplexity", value=format_metric(event.payload.perplexity))
    elif isinstance(event, MetricsCheckpoint):
        checkpoint = event.payload
        embed = _embed("Checkpoint saved", RUNNING, event)
        embed.add_field(name="Step", value=f"{checkpoint.step:,}")
        embed.add_field(name="File", value=PurePath(checkpoint.path).name)
        embed.add_field(name="Size", value=format_bytes(checkpoint.size_bytes))
        if checkpoint.is_best:
            embed.add_field(name="Best so far", value=format_metric(checkpoint.metric))
    elif isinstance(event, MetricsCompleted):
        done = event.payload
        embed = _embed("Training finished", SUCCESS, event)
        embed.add_field(name="Steps", value=f"{done.steps:,}")
        embed.add_field(name="Duration", value=format_duration(done.duration_s))
        embed.add_field(name="Final loss", value=format_metric(done.final_loss))
        embed.add_field(name="Eval loss", value=format_metric(done.final_eval_loss))
        if done.metrics:
            _add_against_baseline(embed, done.metrics)
        else:
            embed.add_field(name="Perplexity", value=format_metric(done.final_perplexity))
        embed.add_field(name="Tokens/s", value=format_rate(done.tokens_per_s))
    else:
        return None
    return embed


def _study(event: Event) -> discord.Embed | None:
    if isinstance(event, StudyStarted):
        study = event.payload
        embed = _embed("Study started", RUNNING, event)
        embed.description = study.study_name
        embed.add_field(name="Trials", value=str(study.n_trials))
        embed.add_field(name="Objective", value=f"{study.direction} {study.metric}")
    elif isinstance(event, StudyTrialCompleted):
        trial = event.payload
        embed = _embed(f"Trial {trial.trial_number}", RUNNING, event)
        embed.add_field(name="State", value=trial.state)
        embed.add_field(name="Value", value=format_metric(trial.value))
    elif isinstance(event, StudyCompleted):
        study_done = event.payload
        embed = _embed("Study completed", SUCCESS, event)
        counts = f"{study_done.n_completed} done, {study_done.n_pruned} pruned, "
        embed.add_field(name="Trials", value=counts + f"{study_done.n_failed} failed")
        embed.add_field(name="Duration", value=format_duration(study_done.duration_s))
        if study_done.best_trial_number is not None:
            best = f"#{study_done.best_trial_number}: {format_metric(study_done.best_value)}"
            embed.add_field(name="Best trial", value=best)
            params = ", ".join(f"{k}={v}" for k, v in sorted(study_done.best_params.items()))
            embed.add_field(name="Best params", value=params or NONE, inline=False)
    else:
        return None
    return embed


def _add_figures(embed: discord.Embed, snapshot: RunSnapshot) -> None:
    embed.add_field(name="Step", value=_step(snapshot.step, snapshot.total_steps))
    embed.add_field(name="Loss", value=format_metric(snapshot.loss))
    if snapshot.final_metrics:  # a classifying run: its test figures, not a perplexity
        _add_against_baseline(embed, snapshot.final_metrics)
    else:
        embed.add_field(name="Perplexity", value=format_metric(snapshot.perplexity))
    embed.add_field(name="Tokens/s", value=format_rate(snapshot.tokens_per_s))


# (field name, metric) of a classifying run's completion: the model's test figure and the
# baseline's on the same split (dual-agent: the keyword baseline; classifier: TF-IDF)
_AGAINST_BASELINE = (
    ("Criteria macro F1", "criteria_matcher/f1"),
    ("Evidence char F1", "evidence_binder/char_f1"),
    ("Test accuracy", "accuracy"),
    ("Test macro F1", "macro_f1"),
)


def _add_against_baseline(embed: discord.Embed, metrics: dict[str, float]) -> None:
    for name, metric in _AGAINST_BASELINE:
        model, baseline = metrics.get(f"test/{metric}"), metrics.get(f"baseline/{metric}")
        if model is None:
            continue
        value = format_metric(model)
        if baseline is not None:
            value += f" (baseline {format_metric(baseline)})"
        embed.add_field(name=name, value=value)


def live_embed(snapshot: RunSnapshot) -> discord.Embed:
    """A run's live status message, edited in place as it trains: progress bar, step, loss,
    eval loss, ETA, tokens/s and the last checkpoint; its end time once it has finished."""
    embed = discord.Embed(
        title=f"{snapshot.run_id} · {snapshot.status}",
        description=progress_bar(snapshot.fraction),
        colour=STATUS_COLOURS.get(snapshot.status, RUNNING),
    )
    embed.add_field(name="Step", value=_step(snapshot.step, snapshot.total_steps))
    embed.add_field(name="Loss", value=format_metric(snapshot.loss))
    embed.add_field(name="Eval loss", value=format_metric(snapshot.eval_loss))
    embed.add_field(name="Tokens/s", value=format_rate(snapshot.tokens_per_s))
    checkpoint = snapshot.last_checkpoint_step
    embed.add_field(
        name="Last checkpoint", value=NONE if checkpoint is None else f"step {checkpoint:,}"
    )
    if snapshot.ended_at is None:
        embed.add_field(name="ETA", value=format_duration(snapshot.eta_s))
    else:
        embed.add_field(name="Ended", value=format_time(snapshot.ended_at))
    return clamp_embed(embed)


def format_time(unix_s: float) -> str:
    """A moment as Discord shows it in the reader's own time zone, with the UTC time after
    it for places that do not render Discord's markup (the console)."""
    utc = datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<t:{int(unix_s)}:f> ({utc})"


# ---- API answers ----------------------------------------------------------------------------


def status_embed(run: RunPublic) -> discord.Embed:
    """`/status`: the run's state, progress bar, loss, throughput, last checkpoint, ETA and,
    once it has finished, its final figures."""
    progress = run.progress
    embed = discord.Embed(
        title=f"{run.run_id} · {run.status}",
        description=progress_bar(progress.fraction if progress else None),
        colour=STATUS_COLOURS[run.status],
    )
    if run.kind is not None:
        embed.add_field(name="Job", value=run.kind)
    if progress is not None:
        embed.add_field(name="Step", value=_step(progress.step, progress.total_steps))
        embed.add_field(name="Loss", value=format_metric(progress.loss))
        # one throughput: the whole run's average once it has one, the latest rate before
        average = run.metrics.tokens_per_s if run.metrics is not None else None
        embed.add_field(name="Tokens/s", value=format_rate(average or progress.tokens_per_s))
        if progress.last_checkpoint_step is not None:
            embed.add_field(name="Last checkpoint", value=f"step {progress.last_checkpoint_step}")
    if run.status.is_terminal:
        ended = run.last_heartbeat
        if ended is None and run.created_at is not None and run.metrics is not None:
            ended = run.created_at + (run.metrics.duration_s or 0.0)
        embed.add_field(name="Ended", value=NONE if ended is None else format_time(ended))
    else:
        embed.add_field(name="ETA", value=format_duration(run.eta_s))
        if run.heartbeat_age_s is not None:
            age = format_duration(run.heartbeat_age_s)
            embed.add_field(name="Last heartbeat", value=f"{age} ago")
    if run.metrics is not None:
        embed.add_field(name="Final loss", value=format_metric(run.metrics.final_loss))
        embed.add_field(name="Perplexity", value=format_metric(run.metrics.final_perplexity))
        embed.add_field(name="Best eval loss", value=format_metric(run.metrics.best_eval_loss))
    if run.message:
        embed.add_field(name="Message", value=run.message, inline=False)
    return clamp_embed(embed)


def runs_embed(page: RunList) -> discord.Embed:
    """`/runs`: one page of runs, newest first."""
    lines = [
        f"`{run.run_id}` · {run.status}" + (f" · {run.kind}" if run.kind else "")
        for run in page.items
    ]
    first = page.offset + 1 if page.items else 0
    embed = discord.Embed(
        title="Runs",
        description="\n".join(lines) or "No runs yet.",
        colour=RUNNING,
    )
    embed.set_footer(text=f"{first}-{page.offset + len(page.items)} of {page.total}")
    return clamp_embed(embed)
