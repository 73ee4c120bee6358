"""The owner's study, watched from its queued event: a DM when it starts, one for each new
best trial (not for every trial), and a terminal one when it ends."""

from __future__ import annotations

import asyncio

import pytest
import redis

from platform_core.events import StudyTrialCompleted
from tests.bot import factories
from tests.bot.discord_standin import OWNER_ID as OWNER
from tests.bot.helpers import publish, run_until, settled
from tests.bot.test_notifier import PNG, RecordingSender, notifier_for
from trainer_bot.notifier import PlotSource
from trainer_bot.outbox import Attachment
from trainer_bot.watch_store import WATCHING_KEY


def test_a_study_sends_its_start_each_new_best_trial_and_its_end(
    redis_url: str, redis_client: redis.Redis
) -> None:
    queued = factories.queued("study-1").model_copy(update={"user_id": OWNER})
    trials = [
        factories.like(StudyTrialCompleted, "study-1", trial_number=n, state=s, is_best=b)
        for n, s, b in (
            (0, "COMPLETE", True),
            (1, "PRUNED", False),
            (2, "COMPLETE", False),
            (3, "COMPLETE", True),
        )
    ]
    publish(
        redis_client,
        queued,
        factories.study_started(),
        *trials,
        factories.study_completed(),
    )
    sender = RecordingSender()

    async def scenario() -> None:
        notifier, client = await notifier_for(redis_url, sender)
        await run_until(notifier, lambda: settled(redis_client))
        await client.aclose()

    asyncio.run(scenario())
    assert redis_client.smembers(WATCHING_KEY) == {b"study-1"}
    titles = [t for t in sender.titles() if t.endswith("study-1")]
    assert titles == [
        "Queued · study-1",
        "Study started · study-1",
        "Trial 0 · study-1",
        "Trial 3 · study-1",
        "Study completed · study-1",
    ], titles


PLOTS = [Attachment("study-1-optimization_history.png", PNG), Attachment("study-1-p.png", PNG)]


async def drawn(study_id: str) -> list[Attachment]:
    assert study_id == "study-1"
    return PLOTS


async def unreachable(study_id: str) -> list[Attachment]:
    raise ConnectionError("the API is down")


@pytest.mark.parametrize(("plots", "attached"), [(drawn, PLOTS), (unreachable, [])])
def test_a_study_s_end_carries_its_plots_or_goes_out_without_them(
    redis_url: str,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    plots: PlotSource,
    attached: list[Attachment],
) -> None:
    redis_client.sadd(WATCHING_KEY, "study-1")
    publish(redis_client, factories.study_completed())
    sender = RecordingSender()

    async def scenario() -> None:
        notifier, client = await notifier_for(redis_url, sender)
        notifier.plots = plots
        await run_until(notifier, lambda: settled(redis_client))
        await client.aclose()

    asyncio.run(scenario())
    [message] = sender.messages
    assert [e.title for e in message.embeds] == ["Study completed · study-1"]
    assert message.attachments == attached
    image = message.embeds[0].image.url
    assert image == (f"attachment://{attached[0].filename}" if attached else None)
    warned = [r for r in caplog.records if getattr(r, "event", None) == "bot.no_chart"]
    assert len(warned) == (0 if attached else 1)
