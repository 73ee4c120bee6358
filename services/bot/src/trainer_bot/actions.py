"""What each command does, apart from where it was typed: the Discord commands (`commands`)
and the console's prompt (`console`) both call these, and show the `Reply` each answers in
their own way (a DM follow-up, or lines on a terminal and PNG files)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import discord
from pydantic import ValidationError

from platform_core.api_models import GenerateRecord, PredictRecord, RunCreate, RunPublic, RunQuery
from platform_core.errors import invalid_input
from platform_core.http_client import ApiError, AsyncTrainerClient
from platform_core.specs import (
    ClassifierPrediction,
    GenerateRequest,
    PredictRequest,
    TrainRunSpec,
)
from trainer_bot import catch_up
from trainer_bot.embeds import runs_embed, status_embed
from trainer_bot.limits import truncate
from trainer_bot.outbox import Attachment
from trainer_bot.watch_store import WatchStore

MESSAGE_MAX = 2_000  # characters in a message's content
RUNS_PAGE_SIZE = 10
NOT_FOUND = 404
AcceptedT = TypeVar("AcceptedT")


@dataclass(frozen=True)
class BotServices:
    """What the commands use; built once by the entry point."""

    api: AsyncTrainerClient
    watches: WatchStore
    owner_id: int | None  # None: nobody is the owner, every interaction is refused
    generate_timeout_s: float = 120.0  # /generate and /predict wait this long for the worker
    poll_interval_s: float = 0.5  # and asks for it this often


@dataclass(frozen=True)
class Reply:
    text: str | None = None
    embed: discord.Embed | None = None
    chart: Attachment | None = None


def new_run_id() -> str:
    """A run id chosen here, so the watch exists before the API can publish the run's first
    event (the API takes the id it is given)."""
    return f"run-{secrets.token_hex(6)}"


def train_request(
    *,
    model: str,
    tokenizer: str | None,
    preset: str,
    corpus: str | None,
    steps: int,
    precision: str = "auto",
) -> dict[str, object]:
    """A training spec's fields from what the owner typed (for `/train`, and `/study start`'s
    base spec); the spec validates them."""
    wanted: dict[str, object] = {
        "model": {"family": model, "preset": preset},
        "tokenizer_id": tokenizer,
        "train": {"max_steps": steps, "precision": precision},
    }
    if model == "dual_agent":  # its posts: a file under the data root, else generated ones
        wanted["dual_agent"] = {"path": corpus}
    elif model == "classifier":  # its prepared dataset's id (the spec refuses none)
        wanted["classifier"] = {"dataset_id": corpus}
    else:
        wanted["corpus"] = {"path": corpus}
    return wanted


async def watched(
    services: BotServices, run_id: str, submit: Callable[[], Awaitable[AcceptedT]]
) -> AcceptedT:
    """`submit` the run (or study) `run_id`, watched from before it exists, so its "queued"
    notice is never missed; the watch is taken back when nothing was submitted."""
    await services.watches.watch(run_id)
    try:
        return await submit()
    except BaseException:
        await services.watches.unwatch(run_id)  # no run: nothing to watch
        raise


async def train(
    services: BotServices,
    *,
    user_id: int,
    model: str,  # a ModelFamily; the spec validates it, as every other field
    tokenizer: str | None,  # language models only; dual_agent trains its own
    preset: str = "tiny",
    corpus: str | None = None,
    steps: int = 1_000,
    precision: str = "auto",
    idempotency_key: str | None = None,
) -> Reply:
    """Queue a model run, watched from before it exists: its "queued" notice is never missed."""
    wanted = train_request(
        model=model,
        tokenizer=tokenizer,
        preset=preset,
        corpus=corpus,
        steps=steps,
        precision=precision,
    )
    try:
        spec = TrainRunSpec.model_validate(wanted)
    except ValidationError as exc:
        raise invalid_input(exc, what="training request") from exc
    run_id = new_run_id()
    body = RunCreate(spec=spec, run_id=run_id, user_id=user_id)
    accepted = await watched(
        services, run_id, lambda: services.api.train_model(body, idempotency_key=idempotency_key)
    )
    if accepted.run_id != run_id:  # an idempotent replay answered an earlier submission
        await services.watches.unwatch(run_id)
        await services.watches.watch(accepted.run_id)
    return Reply(f"Queued `{accepted.run_id}`. I'm watching it and will post updates here.")


async def chart_of(services: BotServices, run_id: str) -> Attachment | None:
    """The run's chart from the API (its whole history); None before it has one."""
    try:
        png = await services.api.run_chart(run_id)
    except ApiError as exc:
        if exc.status == NOT_FOUND:
            return None
        raise
    return Attachment(f"chart-{run_id}.png", png)


async def status(services: BotServices, run_id: str) -> Reply:
    """State, progress, loss and ETA (or end time) of a run, with its chart."""
    embed = status_embed(await services.api.get_run(run_id))
    chart = await chart_of(services, run_id)
    if chart is not None:
        embed.set_image(url=f"attachment://{chart.filename}")
    return Reply(embed=embed, chart=chart)


async def runs(services: BotServices, offset: int = 0) -> Reply:
    page = await services.api.list_runs(RunQuery(limit=RUNS_PAGE_SIZE, offset=offset))
    return Reply(embed=runs_embed(page))


async def watch(services: BotServices, run_id: str) -> Reply:
    """Watch a run, with one catch-up message: its state and its last few progress and eval
    events. The watch starts after what the catch-up read (see `catch_up`)."""
    # first the events (an unknown run is refused in the API's words), then the state, which
    # is then at least as new as the events the watch starts after
    recent = await catch_up.recent(services.api, run_id)
    run = await services.api.get_run(run_id)
    added = await services.watches.watch(run_id, after=recent.read_at)
    text = f"{'Watching' if added else 'Already watching'} `{run_id}`."
    return Reply(text, embed=catch_up.with_recent(status_embed(run), recent))


async def unwatch(services: BotServices, run_id: str) -> Reply:
    removed = await services.watches.unwatch(run_id)
    return Reply(f"Stopped watching `{run_id}`." if removed else f"I wasn't watching `{run_id}`.")


async def cancellable(services: BotServices, run_id: str) -> tuple[RunPublic, str | None]:
    """The run, and why it cannot be cancelled (None when it can)."""
    run = await services.api.get_run(run_id)
    if run.status.is_terminal:
        return run, f"`{run_id}` is already {run.status}."
    return run, None


async def cancel(services: BotServices, run_id: str) -> str:
    result = await services.api.cancel_run(run_id)
    if result.outcome == "cancelled":
        return f"Cancelled `{run_id}`."
    return f"Asked `{run_id}` to stop; it keeps a final checkpoint."


RecordT = TypeVar("RecordT", GenerateRecord, PredictRecord)


async def finished(services: BotServices, fetch: Callable[[], Awaitable[RecordT]]) -> RecordT:
    """Poll an inference request until the worker has answered (within the timeout)."""
    async with asyncio.timeout(services.generate_timeout_s):
        record = await fetch()
        while record.status in {"queued", "running"}:
            await asyncio.sleep(services.poll_interval_s)
            record = await fetch()
    return record


async def generate(
    services: BotServices,
    run_id: str,
    prompt: str,
    max_new_tokens: int = 64,
    idempotency_key: str | None = None,
) -> Reply:
    request = GenerateRequest(prompt=prompt, max_new_tokens=max_new_tokens)
    accepted = await services.api.generate(run_id, request, idempotency_key=idempotency_key)
    record = await finished(
        services, lambda: services.api.get_generate(run_id, accepted.request_id)
    )
    if record.result is None:
        reason = record.error.message if record.error else "the worker gave no output"
        return Reply(f"Generation failed: {reason}")
    text = truncate(record.result.outputs[0], MESSAGE_MAX - len("```\n\n```"))
    return Reply(f"```\n{text}\n```")


async def predict(
    services: BotServices, run_id: str, text: str, idempotency_key: str | None = None
) -> Reply:
    """The label a classifier run gives `text` (with the likeliest labels), or the criteria
    a dual-agent run finds in it and its evidence sentence."""
    request = PredictRequest(texts=(text,))
    accepted = await services.api.predict(run_id, request, idempotency_key=idempotency_key)
    record = await finished(services, lambda: services.api.get_predict(run_id, accepted.request_id))
    if record.result is None:
        reason = record.error.message if record.error else "the worker gave no output"
        return Reply(f"Prediction failed: {reason}")
    (found,) = record.result.predictions
    if isinstance(found, ClassifierPrediction):
        likely_labels = ", ".join(f"{p.label} {p.probability:.2f}" for p in found.top)
        return Reply(truncate(f"Label: {found.label}\nLikeliest: {likely_labels}", MESSAGE_MAX))
    likely = sorted(found.criteria, key=lambda c: -c.probability)[:3]
    lines = [
        f"Matched: {', '.join(found.matched) or 'none'}",
        "Likeliest: " + ", ".join(f"{c.criterion} {c.probability:.2f}" for c in likely),
    ]
    if found.evidence is None:
        lines.append("Evidence: none found")
    else:
        span = found.evidence
        quoted = truncate(span.text, MESSAGE_MAX // 2)
        lines.append(f"Evidence (chars {span.start}-{span.end}): > {quoted}")
    return Reply(truncate("\n".join(lines), MESSAGE_MAX))
