"""The registry in the owner's DM and `/watch`'s catch-up, through discord.py against the
Discord stand-in, with the API on a real HTTP server and a real Redis behind it: `/models`
and its typed errors, a DM for every promotion and rollback (watched run or not), and a
catch-up of a run's recent events that the live updates then never repeat."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis

from platform_core import api_calls
from platform_core.api_models import ModelVersionCreate, PromoteRequest, RollbackRequest
from platform_core.event_bus import AsyncEventBus, EventBus
from platform_core.http_client import TrainerClient
from platform_core.layout import DataLayout
from platform_core.redis_connection import connect_async
from platform_core.run_state import RunStatus
from tests.api.conftest import LiveApi
from tests.bot import factories
from tests.bot.discord_standin import OWNER_ID, DiscordStandIn
from tests.bot.helpers import FAST, WAIT_S, settled
from tests.bot.interactions import command
from tests.bot.test_commands import (
    STRANGER,
    Bot,
    BotRunner,
    add_runs,
    contents,
    followups,
    run_bot,  # noqa: F401 - the fixture, for these tests
)
from tests.bot.test_console import type_lines
from tests.bot.test_discord_delivery import deliver_all, titles
from tests.bot.test_notifier import RecordingSender
from trainer_bot.guards import REFUSAL
from trainer_bot.notifier import Notifier
from trainer_bot.watch_store import WATCHING_KEY, WatchStore

pytestmark = pytest.mark.integration


def saved_model(data_root: Path, run_id: str) -> str:
    """A run's saved model folder as the registry copies it (config and weights files)."""
    folder = DataLayout(data_root).model_dir(run_id)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return run_id


def register(api: TrainerClient, name: str, run_id: str, *versions: str) -> None:
    for version in versions:
        body = ModelVersionCreate(source_run=run_id, version=version, actor="ana", reason="cut")
        api.call(api_calls.register_model_version(name, body))


def test_models_lists_names_and_a_names_versions_with_typed_errors(
    run_bot: BotRunner,  # noqa: F811 - the fixture imported above
    live_api: LiveApi,
    data_root: Path,
) -> None:
    run_id = saved_model(data_root, "run-reg")
    with TrainerClient(live_api.base_url) as api:
        register(api, "clf", run_id, "1.0.0", "1.1.0")
        register(api, "tagger", run_id, "0.1.0")
        promote = PromoteRequest(actor="bo", reason="A/B won")
        api.call(api_calls.promote_model("clf", "1.0.0", promote))

    async def scenario(bot: Bot) -> None:
        await bot.call(command("models"))
        await bot.call(command("models", model="clf"))
        await bot.call(command("models", model="nothing"))
        await bot.call(command("models", model="bad name!"))
        await bot.call(command("models", user_id=STRANGER))

    standin = run_bot(scenario)
    listed, versions = (record.embeds[0] for record in followups(standin)[:2])
    assert listed["title"] == "Models"
    assert listed["description"] == (
        "`clf` · production 1.0.0 · 2 versions\n`tagger` · production — · 1 version"
    )
    assert versions["title"] == "Model clf"
    assert versions["description"] == "🟡 `1.1.0` · staging\n🟢 `1.0.0` · production"
    fields = {f["name"]: f["value"] for f in json.loads(json.dumps(versions["fields"]))}
    assert fields == {"Production": "1.0.0", "Last change": "promote 1.0.0 by bo: A/B won"}
    unknown, invalid = contents(standin)[2:4]
    assert "nothing" in unknown and unknown.endswith("(NOT_FOUND)")
    assert invalid.startswith("The trainer API said: ") and invalid.endswith("(INVALID_INPUT)")
    refusal = standin.interaction_answers()[-1]
    assert (refusal.body or {})["data"] == {"content": REFUSAL, "flags": 64, "tts": False}


def test_every_promotion_and_rollback_reaches_the_owner_as_one_paced_digest(
    live_api: LiveApi,
    data_root: Path,
    redis_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing is watched: registry changes are the owner's whatever runs they came from.
    The API published them once they committed; a refused change published nothing."""
    run_id = saved_model(data_root, "run-reg")
    with TrainerClient(live_api.base_url) as api:
        register(api, "clf", run_id, "1.0.0", "1.1.0")
        api.call(api_calls.promote_model("clf", "1.0.0", PromoteRequest(reason="first")))
        owner = PromoteRequest(actor=str(OWNER_ID), reason="better F1")
        api.call(api_calls.promote_model("clf", "1.1.0", owner))
        back = RollbackRequest(actor=str(OWNER_ID), reason="latency")
        api.call(api_calls.rollback_model("clf", back))
    assert redis_client.scard(WATCHING_KEY) == 0
    standin = DiscordStandIn()

    notifier = asyncio.run(deliver_all(redis_url, redis_client, standin, monkeypatch))

    assert titles(standin) == [
        "Promoted · clf 1.0.0",
        "Promoted · clf 1.1.0",
        "Rolled back · clf → 1.0.0",
    ]
    assert len(standin.messages) == 1  # the backlog went out as one digest
    rollback = json.loads(json.dumps(standin.messages[0].embeds[2]))
    fields = {f["name"]: f["value"] for f in rollback["fields"]}
    assert fields == {
        "Stage": "archived → production",
        "Production before": "1.1.0",
        "By": str(OWNER_ID),
        "Why": "latency",
    }
    assert rollback["footer"]["text"] == f"trainer.model.rolled_back.v1 · run {run_id}"
    assert (notifier.sent, notifier.dropped) == (1, 0)


def test_watch_catches_up_with_recent_events_and_live_updates_start_after_them(
    run_bot: BotRunner,  # noqa: F811 - the fixture imported above
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    add_runs(redis_client, "run-mid", status=RunStatus.RUNNING)
    bus = EventBus(redis_client)
    bus.publish(factories.queued("run-mid"))
    bus.publish(factories.started("run-mid"))
    for step in range(0, 70, 10):
        bus.publish(factories.metrics_progress("run-mid", step=step, loss=3.0 - step / 100))
    bus.publish(factories.evaluated("run-mid", step=60))
    bus.publish(factories.metrics_progress("run-other", step=5))  # another run: not shown
    sender = RecordingSender()

    async def scenario(bot: Bot) -> None:
        await bot.call(command("watch", run_id="run-mid"))
        # the notifier starts from the stream's beginning: what the catch-up covered is
        # pending for it too, and must not come back as notices or live figures
        bus.publish(factories.metrics_progress("run-mid", step=70, loss=2.2))
        bus_client = await connect_async(redis_url)
        notifier = Notifier(
            AsyncEventBus(bus_client), bot.client.services.watches, sender, OWNER_ID, FAST
        )
        task = asyncio.create_task(notifier.run())
        async with asyncio.timeout(WAIT_S):
            while not (settled(redis_client) and sender.messages):
                await asyncio.sleep(0.01)
        notifier.stop()
        await task
        await bus_client.aclose()

    standin = run_bot(scenario)
    [shown] = followups(standin)
    assert (shown.body or {})["content"] == "Watching `run-mid`."
    fields = {f["name"]: f["value"] for f in json.loads(json.dumps(shown.embeds[0]["fields"]))}
    assert fields["Recent"].splitlines() == [
        "step 30 · loss 2.7 · 12,346 tokens/s",
        "step 40 · loss 2.6 · 12,346 tokens/s",
        "step 50 · loss 2.5 · 12,346 tokens/s",
        "step 60 · loss 2.4 · 12,346 tokens/s",
        "step 60 · eval loss 2 · perplexity 7.389",
    ]
    assert sender.notices() == []  # queued and started came before the watch's start
    [live] = [embed for message in sender.messages for embed in message.embeds]
    assert live.title == "run-mid · running"
    live_fields = {field.name: field.value for field in live.fields}
    assert (live_fields["Step"], live_fields["Loss"]) == ("70", "2.2")
    assert live_fields["Eval loss"] == "—"  # the eval before the watch is the catch-up's


def test_the_console_answers_models_too(
    live_api: LiveApi, redis_url: str, data_root: Path, tmp_path: Path
) -> None:
    with TrainerClient(live_api.base_url) as api:
        register(api, "clf", saved_model(data_root, "run-reg"), "1.0.0")
    printed = type_lines(live_api, redis_url, tmp_path, "/models", "/models clf", "/models x")
    assert printed[1:] == [
        "Models · `clf` · production — · 1 version",
        "Model clf · 🟡 `1.0.0` · staging · Production: — · "
        "Last change: register 1.0.0 by ana: cut",
        "The trainer API said: no model named x is registered (NOT_FOUND)",
    ]


def test_a_watchs_start_is_kept_in_redis_and_only_a_new_watch_sets_it(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def scenario() -> None:
        client = await connect_async(redis_url)
        store = WatchStore(client)
        assert await store.watch("run-a", after="1700000000000-5")
        assert not await store.watch("run-a", after="1800000000000-0")  # keeps its start
        restored = WatchStore(client)
        assert await restored.restore() == {"run-a"}
        assert not restored.is_watched("run-a", "1700000000000-5")  # the catch-up's
        assert restored.is_watched("run-a", "1700000000000-6")
        assert restored.is_watched("run-a", "1700000000001-0")
        assert restored.is_watched("run-a")  # a check without an entry: watched
        assert await restored.unwatch("run-a")
        assert not restored.is_watched("run-a", "1900000000000-0")
        await client.aclose()

    asyncio.run(scenario())
    assert redis_client.exists(WATCHING_KEY, f"{WATCHING_KEY}:after") == 0
