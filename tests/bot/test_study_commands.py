"""`/study start` and `/study status` driven through discord.py's CommandTree against the
Discord stand-in, the API a real server: a study is queued for the owner and watched, its
trials and finalization run on a worker, its status shows the best trial and its history
plot, and its completion DM carries both plots. Bad input is refused in plain words."""

from __future__ import annotations

import json

import pytest
import redis

from platform_core.event_bus import AsyncEventBus
from platform_core.http_client import TrainerClient
from platform_core.redis_connection import connect_async
from platform_core.study_api import STUDY_PLOTS, get_study, list_studies
from tests.api.conftest import LiveApi, char_tokenizer, work
from tests.bot.discord_standin import OWNER_ID
from tests.bot.helpers import FAST, run_until, settled
from tests.bot.interactions import subcommand
from tests.bot.test_commands import (
    AUTOCOMPLETE,
    DEFERRED,
    Bot,
    BotRunner,
    callback,
    contents,
    followups,
    run_bot,
)
from trainer_bot.bot import plot_source
from trainer_bot.notifier import Notifier
from trainer_bot.senders import DiscordSender
from trainer_bot.watch_store import WATCHING_KEY

__all__ = ["run_bot"]
pytestmark = pytest.mark.integration
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_a_study_started_from_discord_runs_to_a_dm_with_its_plots(
    run_bot: BotRunner,
    live_api: LiveApi,
    redis_url: str,
    redis_client: redis.Redis,
    corpus: str,
) -> None:
    with TrainerClient(live_api.base_url) as api:
        api.train_tokenizer(char_tokenizer(corpus, "tok"))
        work(redis_client)

    async def start(bot: Bot) -> None:
        await bot.call(
            subcommand(
                "study", "start", model="char_lstm", tokenizer="tok", corpus=corpus, steps=10,
                trials=3, space="lr", name="from-discord",
            )
        )  # fmt: skip

    started = run_bot(start)
    deferred, queued = started.interaction_answers()
    assert callback(deferred)[0] == DEFERRED  # acknowledged before any API call
    text = str((queued.body or {}).get("content"))
    study_id = text.split("`")[1]
    assert text.startswith(f"Queued study `{study_id}`: 3 trials, 1 at a time.")
    assert redis_client.smembers(WATCHING_KEY) == {study_id.encode()}
    work(redis_client)  # the three trials, one after the other, then the finalization

    with TrainerClient(live_api.base_url) as api:
        study = api.call(get_study(study_id))
    assert (study.status, study.user_id, study.name) == ("completed", OWNER_ID, "from-discord")
    assert study.plots == list(STUDY_PLOTS) and study.best is not None

    async def status_then_notices(bot: Bot) -> None:
        await bot.call(subcommand("study", "status", OWNER_ID, "study_id", study_id=study_id[:9]))
        await bot.call(subcommand("study", "status", study_id=study_id))
        redis_async = await connect_async(redis_url)
        services = bot.client.services
        notifier = Notifier(
            AsyncEventBus(redis_async),
            services.watches,
            DiscordSender(bot.client),
            OWNER_ID,
            FAST,
            plots=plot_source(services),
        )
        await run_until(notifier, lambda: settled(redis_client))
        await redis_async.aclose()

    standin = run_bot(status_then_notices)

    completion, _, shown = standin.interaction_answers()
    assert callback(completion) == (
        AUTOCOMPLETE,
        {"choices": [{"name": f"{study_id} · completed · from-discord", "value": study_id}]},
    )
    [embed] = shown.embeds
    assert embed["title"] == f"{study_id} · completed"
    fields = {f["name"]: f["value"] for f in json.loads(json.dumps(embed["fields"]))}
    assert fields["Trials"] == "3 / 3 done: 3 completed, 0 pruned, 0 failed, 0 in flight"
    assert fields["Best trial"] == f"#{study.best.trial_number}: {study.best.value:.4g}"
    assert fields["Best params"].startswith("train.learning_rate=")
    history = f"{study_id}-optimization_history.png"
    assert embed["image"] == {"url": f"attachment://{history}"}
    assert list(shown.files) == [history] and shown.files[history].startswith(PNG_MAGIC)

    notices = [str(e["title"]) for m in standin.messages for e in m.embeds]
    assert notices[0] == f"Queued · {study_id}"
    assert notices[1] == f"Study started · {study_id}"
    assert notices[-1] == f"Study completed · {study_id}"
    [with_plots] = [m for m in standin.messages if m.files]
    assert sorted(with_plots.files) == sorted(f"{study_id}-{name}" for name in STUDY_PLOTS)
    assert all(png.startswith(PNG_MAGIC) for png in with_plots.files.values())
    assert with_plots.embeds[-1]["title"] == f"Study completed · {study_id}"


def test_bad_study_requests_are_refused_in_plain_words_and_nothing_is_queued(
    run_bot: BotRunner, live_api: LiveApi, redis_client: redis.Redis, known: None
) -> None:
    async def scenario(bot: Bot) -> None:
        def start(focused: str | None = None, **options: str) -> str:
            options |= {"model": "char_lstm", "tokenizer": "tok-1"}
            return subcommand("study", "start", OWNER_ID, focused, **options)

        await bot.call(start(space="learning rate please"))
        await bot.call(start(space='["train.learning_rate"]'))
        await bot.call(start(space='{"train.nope": {"type": "uniform", "low": 0, "high": 1}}'))
        await bot.call(start(direction="maximize"))
        await bot.call(subcommand("study", "status", study_id="no-such-study"))
        await bot.call(start(focused="space", space="lr"))

    standin = run_bot(scenario)
    not_json, not_an_object, bad_path, maximize, unknown = contents(standin)
    for refusal in (not_json, not_an_object):  # refused here, before the API is asked
        assert refusal.startswith("the search space must be one of lr, lr-batch or a JSON")
        assert refusal.endswith("(INVALID_INPUT)")
    assert bad_path.startswith("The trainer API said: ") and "train.nope" in bad_path
    assert bad_path.endswith("(INVALID_INPUT)")
    assert maximize.startswith("invalid study request: ") and "'minimize'" in maximize
    assert unknown == "The trainer API said: study no-such-study does not exist (NOT_FOUND)"
    spaces = callback(standin.interaction_answers()[-1])
    named = [{"name": n, "value": n} for n in ("lr", "lr-batch")]
    assert spaces == (AUTOCOMPLETE, {"choices": named})
    assert len(followups(standin)) == 5
    with TrainerClient(live_api.base_url) as api:
        assert api.call(list_studies()).total == 0
    assert redis_client.smembers(WATCHING_KEY) == set()  # each watch taken back


def test_study_ids_autocomplete_to_nothing_while_the_api_is_down(run_bot: BotRunner) -> None:
    async def scenario(bot: Bot) -> None:
        await bot.call(subcommand("study", "status", OWNER_ID, "study_id", study_id="st"))

    standin = run_bot(scenario, api_url="http://127.0.0.1:9")
    [answer] = standin.interaction_answers()
    assert callback(answer) == (AUTOCOMPLETE, {"choices": []})
