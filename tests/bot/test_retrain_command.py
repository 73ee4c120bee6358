"""`/retrain` and the retraining verdict in the owner's DM, through discord.py against the
Discord stand-in, with the API on a real HTTP server and a real Redis: the command queues the
chain (names autocompleted from the registry), its refusals are typed, and a verdict, promoted
or kept, reaches the owner as a notice whether or not anything is watched."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis

from platform_core.events import ModelRetrained, ModelRetrainedPayload
from platform_core.model_registry import ModelRegistry
from platform_core.run_state import RunStateStore, RunStatus
from tests.api.conftest import LiveApi
from tests.api.test_retraining import registry
from tests.bot.discord_standin import OWNER_ID, DiscordStandIn
from tests.bot.helpers import publish
from tests.bot.interactions import command
from tests.bot.test_commands import (
    AUTOCOMPLETE,
    Bot,
    BotRunner,
    callback,
    contents,
    run_bot,
)
from tests.bot.test_console import type_lines
from tests.bot.test_discord_delivery import deliver_all, titles

__all__ = ["registry", "run_bot"]
pytestmark = pytest.mark.integration


def test_retrain_queues_the_chain_and_says_what_went_wrong(
    run_bot: BotRunner,
    redis_client: redis.Redis,
    registry: ModelRegistry,
) -> None:
    async def scenario(bot: Bot) -> None:
        await bot.call(command("retrain", model="clf"))
        await bot.call(command("retrain", model="clf"))  # one at a time
        await bot.call(command("retrain", model="nothing"))

    standin = run_bot(scenario)
    queued, busy, unknown = contents(standin)
    assert queued.startswith("Retraining `clf` against production 1.0.0: `retrain-")
    assert queued.endswith(". You will get the verdict here.")
    run_id = queued.split("→ `")[-1].split("`")[0]
    store = RunStateStore(redis_client)
    assert store.status(run_id) is RunStatus.QUEUED
    assert store.meta(run_id)["user_id"] == str(OWNER_ID)  # the verdict comes to the owner
    assert busy.endswith("(CONFLICT)") and run_id in busy
    assert unknown.endswith("(NOT_FOUND)")


def test_model_names_autocomplete(
    run_bot: BotRunner,
    registry: ModelRegistry,
) -> None:
    async def scenario(bot: Bot) -> None:
        await bot.call(command("retrain", focused="model", model="CL"))

    standin = run_bot(scenario)
    [answer] = standin.interaction_answers()
    kind, data = callback(answer)
    assert kind == AUTOCOMPLETE
    assert json.loads(json.dumps(data["choices"])) == [{"name": "clf", "value": "clf"}]

    down = run_bot(scenario, api_url="http://127.0.0.1:9")
    assert [callback(r) for r in down.interaction_answers()] == [(AUTOCOMPLETE, {"choices": []})]


def _verdict(decision: str, candidate: str) -> ModelRetrained:
    return ModelRetrained(
        run_id="retrain-1",
        user_id=OWNER_ID,
        payload=ModelRetrainedPayload.model_validate(
            {
                "name": "clf",
                "trigger": "data_growth",
                "decision": decision,
                "reason": "accuracy +0.1000 (>= +0.0200), McNemar p = 0.001 < 0.05",
                "production_version": "1.0.0",
                "candidate_version": candidate,
                "dataset_id": "ds-2",
                "current_accuracy": 0.8,
                "candidate_accuracy": 0.9,
                "p_value": 0.001,
                "report": "models/clf/comparisons/retrain-1/report.json",
            }
        ),
    )


def test_each_verdict_reaches_the_owner_unwatched(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(redis_client, _verdict("PROMOTE", "1.1.0"), _verdict("KEEP", "1.2.0"))
    standin = DiscordStandIn()
    asyncio.run(deliver_all(redis_url, redis_client, standin, monkeypatch))
    assert titles(standin) == ["Retrained · clf 1.1.0 promoted", "Retrained · clf kept 1.0.0"]
    promoted = json.loads(json.dumps(standin.messages[0].embeds[0]))
    fields = {f["name"]: f["value"] for f in promoted["fields"]}
    assert fields["Accuracy"] == "0.800 → 0.900"
    assert (fields["McNemar p"], fields["Trigger"], fields["Dataset"]) == (
        "0.001",
        "data growth",
        "ds-2",
    )
    assert promoted["footer"]["text"].endswith("· run retrain-1")


def test_the_console_retrains_too(
    live_api: LiveApi,
    redis_url: str,
    tmp_path: Path,
    registry: ModelRegistry,
) -> None:
    printed = type_lines(live_api, redis_url, tmp_path, "/retrain clf", "/retrain")
    assert printed[1].startswith("Retraining clf against production 1.0.0: retrain-")  # plain text
    assert printed[2] == "/retrain: missing model"
