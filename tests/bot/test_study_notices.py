"""The owner's study, watched from its queued event: a DM when it starts, one for each new
best trial (not for every trial), and a terminal one when it ends."""

from __future__ import annotations

import asyncio

import redis

from platform_core.events import StudyTrialCompleted
from tests.bot import factories
from tests.bot.discord_standin import OWNER_ID as OWNER
from tests.bot.helpers import publish, run_until, settled
from tests.bot.test_notifier import RecordingSender, notifier_for
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
