"""Studies in the owner's DM.

- `/study start`: an Optuna study of one base training spec (the fields `/train` takes),
  searching a named space (`SEARCH_SPACES`) or one typed as JSON, queued through the API
  (`POST /studies`) for the owner and watched from before it exists, as `/train` does.
- `/study status`: its trials (done, pruned, failed, running), the best so far with its
  params and, once drawn, its optimisation history.
- The notices (a DM when it starts, for each new best trial, and at its end with its plots)
  are the notifier's; `plots` fetches the plots it attaches (`GET /studies/{id}/plots/...`).

Bad input is refused in the API's words (or, for a search space that is not JSON, in ours)
before anything is queued.
"""

from __future__ import annotations

import json
import secrets
from typing import Final

import discord
from pydantic import ValidationError

from platform_core.errors import AppError, ErrorCode, invalid_input
from platform_core.json_types import JsonObject
from platform_core.study_api import (
    HISTORY_PNG,
    StudyCreate,
    StudyPublic,
    StudyQuery,
    StudySummary,
    create_study,
    get_study,
    list_studies,
    study_plot,
)
from platform_core.study_specs import StudySpec
from trainer_bot.actions import BotServices, Reply, train_request, watched
from trainer_bot.embeds import NONE, STATUS_COLOURS, format_metric
from trainer_bot.limits import clamp_embed
from trainer_bot.outbox import Attachment

# search spaces the owner can name instead of typing JSON
SEARCH_SPACES: Final[dict[str, JsonObject]] = {
    "lr": {"train.learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 3e-2}},
    "lr-batch": {
        "train.learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 3e-2},
        "train.batch_size": {"type": "categorical", "choices": [8, 16, 32]},
    },
}
SPACE_EXAMPLE: Final = '{"train.learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 3e-2}}'
# step 0's eval is the untrained model: the pruner judges from the next one on
PRUNE_AFTER_STEPS: Final = 1
# what `/study start` does unless told otherwise (a run's preset and steps as `/train`'s)
DEFAULT_SPACE: Final = "lr"
DEFAULT_TRIALS: Final = 20
DEFAULT_STEPS: Final = 1_000


def new_study_id() -> str:
    """A study id chosen here, so the watch exists before the API publishes its first event."""
    return f"study-{secrets.token_hex(6)}"


def search_space(text: str) -> JsonObject:
    """A named space (`SEARCH_SPACES`) or a JSON object of `path: distribution`."""
    if text in SEARCH_SPACES:
        return SEARCH_SPACES[text]
    try:
        space = json.loads(text)
    except ValueError:
        space = None
    if not isinstance(space, dict):
        raise AppError(
            ErrorCode.INVALID_INPUT,
            f"the search space must be one of {', '.join(SEARCH_SPACES)} or a JSON object "
            f"such as {SPACE_EXAMPLE}",
        )
    return space


async def start(
    services: BotServices,
    *,
    user_id: int,
    model: str,
    space: str = DEFAULT_SPACE,
    trials: int = DEFAULT_TRIALS,
    tokenizer: str | None = None,
    preset: str = "tiny",
    corpus: str | None = None,
    steps: int = DEFAULT_STEPS,
    parallelism: int = 1,
    metric: str = "eval_loss",
    direction: str = "minimize",
    name: str | None = None,
) -> Reply:
    """Queue a study for the owner, watched from before it exists."""
    base = train_request(
        model=model, tokenizer=tokenizer, preset=preset, corpus=corpus, steps=steps
    )
    wanted = {
        "name": name or f"{model}-{preset}",
        "base": base,
        "search_space": search_space(space),
        "n_trials": trials,
        "parallelism": parallelism,
        "metric": metric,
        "direction": direction,
        "pruner": {"n_warmup_steps": PRUNE_AFTER_STEPS},
    }
    try:
        spec = StudySpec.model_validate(wanted)
    except ValidationError as exc:
        raise invalid_input(exc, what="study request") from exc
    study_id = new_study_id()
    body = StudyCreate(spec=spec, study_id=study_id, user_id=user_id)
    accepted = await watched(services, study_id, lambda: services.api.call(create_study(body)))
    running = len(accepted.trial_run_ids)
    return Reply(
        f"Queued study `{accepted.study_id}`: {spec.n_trials} trials, {running} at a time. "
        "I'll post here when it starts, for each new best trial, and at its end with its plots."
    )


async def status(services: BotServices, study_id: str) -> Reply:
    """The study's trials and best so far, with its optimisation history once drawn."""
    study = await services.api.call(get_study(study_id))
    embed = status_embed(study)
    if HISTORY_PNG not in study.plots:
        return Reply(embed=embed)
    png = await services.api.read_bytes(study_plot(study_id, HISTORY_PNG))
    chart = Attachment(f"{study_id}-{HISTORY_PNG}", png)
    embed.set_image(url=f"attachment://{chart.filename}")
    return Reply(embed=embed, chart=chart)


async def recent(services: BotServices, limit: int) -> list[StudySummary]:
    """The newest studies, for autocompletion."""
    return (await services.api.call(list_studies(StudyQuery(limit=limit)))).items


async def plots(services: BotServices, study_id: str) -> list[Attachment]:
    """The plots the study's end drew, to attach to its completion notice."""
    study = await services.api.call(get_study(study_id))
    return [
        Attachment(f"{study_id}-{name}", await services.api.read_bytes(study_plot(study_id, name)))
        for name in study.plots
    ]


def status_embed(study: StudyPublic) -> discord.Embed:
    """`/study status`: counts, objective, the best trial and its params, the API's message."""
    embed = discord.Embed(
        title=f"{study.study_id} · {study.status}",
        description=study.name,
        colour=STATUS_COLOURS[study.status],
    )
    running = sum(1 for t in study.trials if t.state == "RUNNING")
    embed.add_field(
        name="Trials",
        value=f"{study.trials_done} / {study.n_trials} done: {study.n_complete} completed, "
        f"{study.n_pruned} pruned, {study.n_failed} failed, {running} in flight",
        inline=False,
    )
    embed.add_field(name="Objective", value=f"{study.direction} {study.metric}")
    best = study.best
    if best is None:
        embed.add_field(name="Best trial", value=NONE)
    else:
        number = NONE if best.trial_number is None else f"#{best.trial_number}"
        embed.add_field(name="Best trial", value=f"{number}: {format_metric(best.value)}")
        params = ", ".join(f"{k}={v}" for k, v in sorted(best.params.items()))
        embed.add_field(name="Best params", value=params or NONE, inline=False)
    if study.message:
        embed.add_field(name="Message", value=study.message, inline=False)
    return clamp_embed(embed)
