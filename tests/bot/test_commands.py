"""The application commands, driven through discord.py's own CommandTree and view store with
interaction payloads, answering through discord.py's HTTP client to the Discord stand-in, with
a real API server (and its Redis) behind them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
import redis

from platform_core.event_bus import AsyncEventBus
from platform_core.http_client import AsyncTrainerClient, TrainerClient
from platform_core.inference_results import InferenceRecord, load_record, save_record
from platform_core.redis_connection import connect_async
from platform_core.run_state import RunStateStore, RunStatus
from tests.api.conftest import LiveApi
from tests.bot.discord_standin import OWNER_ID, DiscordStandIn, Recorded
from tests.bot.helpers import FAST, WAIT_S, discord_client, settled
from tests.bot.interactions import GUILD_ID, button, command, interaction
from tests.bot.test_notifier import RecordingSender
from trainer_bot import actions
from trainer_bot.actions import BotServices
from trainer_bot.commands import BotClient
from trainer_bot.guards import REFUSAL
from trainer_bot.notifier import Notifier
from trainer_bot.watch_store import WATCHING_KEY, WatchStore

pytestmark = pytest.mark.integration
STRANGER = 777
DEFERRED = 5  # interaction callback types
MESSAGE = 4
UPDATE_DEFERRED = 6
AUTOCOMPLETE = 8
EPHEMERAL = 64


@dataclass
class Bot:
    client: BotClient
    standin: DiscordStandIn

    async def call(self, raw: str) -> None:
        """Run a command (or autocomplete) to its end, as the gateway would dispatch it."""
        await self.client.tree._call(interaction(self.client, raw))

    async def press(self, label: str, *, user_id: int = OWNER_ID, answers: int = 2) -> None:
        """Press the button `label` of the last message with buttons; wait for `answers`
        more requests to reach Discord."""
        message = next(m for m in reversed(self.standin.webhook_messages) if m["components"])
        rows = json.loads(json.dumps(message["components"]))
        custom_id = next(
            b["custom_id"] for row in rows for b in row["components"] if b["label"] == label
        )
        expected = len(self.standin.interaction_answers()) + answers
        self.client._connection.parse_interaction_create(
            json.loads(button(custom_id, message, user_id=user_id))
        )
        async with asyncio.timeout(WAIT_S):
            while len(self.standin.interaction_answers()) < expected:
                await asyncio.sleep(0.01)
            # then let the client finish with the answers (it stores the edited message's
            # view when Discord's reply comes back) before the next press is dispatched
            seen = -1
            while seen != len(self.standin.interaction_answers()):
                seen = len(self.standin.interaction_answers())
                await asyncio.sleep(0.1)


Scenario = Callable[[Bot], Awaitable[None]]


class BotRunner(Protocol):
    def __call__(
        self,
        scenario: Scenario,
        *,
        owner_id: int | None = OWNER_ID,
        api_url: str | None = None,
        generate_timeout_s: float = 10.0,
    ) -> DiscordStandIn: ...


@pytest.fixture
def run_bot(live_api: LiveApi, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> BotRunner:
    """Run `scenario` against a BotClient logged in to a fresh stand-in, its commands calling
    the live API (or `api_url`); returns the stand-in, which recorded every answer."""

    def run(
        scenario: Scenario,
        *,
        owner_id: int | None = OWNER_ID,
        api_url: str | None = None,
        generate_timeout_s: float = 10.0,
    ) -> DiscordStandIn:
        standin = DiscordStandIn()

        async def main() -> None:
            redis_async = await connect_async(redis_url)
            api = AsyncTrainerClient(api_url or live_api.base_url, backoff_s=0.0, max_retries=0)
            services = BotServices(
                api,
                WatchStore(redis_async),
                owner_id,
                generate_timeout_s=generate_timeout_s,
                poll_interval_s=0.02,
            )
            async with discord_client(standin, monkeypatch, BotClient(services)) as client:
                assert isinstance(client, BotClient)
                await scenario(Bot(client, standin))
            await api.aclose()
            await redis_async.aclose()

        asyncio.run(main())
        return standin

    return run


def callback(record: Recorded) -> tuple[object, dict[str, object]]:
    """(type, data) of an interaction callback."""
    assert record.body is not None
    data = record.body.get("data") or {}
    assert isinstance(data, dict)
    return record.body["type"], data


def followups(standin: DiscordStandIn) -> list[Recorded]:
    return [r for r in standin.interaction_answers() if r.path.startswith("/webhooks/")]


def contents(standin: DiscordStandIn) -> list[str]:
    return [str((r.body or {}).get("content")) for r in followups(standin)]


def test_commands_are_synced_for_dms_only(run_bot: BotRunner) -> None:
    async def nothing(bot: Bot) -> None:
        return None

    standin = run_bot(nothing)
    names = {str(c["name"]) for c in standin.commands}
    assert names == {
        "train",
        "status",
        "runs",
        "watch",
        "unwatch",
        "cancel",
        "generate",
        "predict",
        "models",
        "study",
        "retrain",
    }
    assert all(c["contexts"] == [1] for c in standin.commands)  # BOT_DM only
    study = next(c for c in standin.commands if c["name"] == "study")
    subcommands = json.loads(json.dumps(study["options"]))
    assert [(o["name"], o["type"]) for o in subcommands] == [("start", 1), ("status", 1)]
    train = next(c for c in standin.commands if c["name"] == "train")
    options = json.loads(json.dumps(train["options"]))
    model = next(o for o in options if o["name"] == "model")
    families = {"gpt2", "char_lstm", "dual_agent", "classifier"}
    assert {choice["value"] for choice in model["choices"]} == families
    preset = next(o for o in options if o["name"] == "preset")
    assert preset["autocomplete"] is True
    assert train["description"] == "Start training a model."


@pytest.mark.parametrize(
    ("user_id", "guild_id", "owner_id"),
    [(STRANGER, None, OWNER_ID), (OWNER_ID, GUILD_ID, OWNER_ID), (OWNER_ID, None, None)],
    ids=["stranger-in-dm", "owner-in-a-server", "no-owner-configured"],
)
def test_anyone_but_the_owner_in_a_dm_is_refused_and_nothing_runs(
    run_bot: BotRunner,
    live_api: LiveApi,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    user_id: int,
    guild_id: int | None,
    owner_id: int | None,
) -> None:
    secret = "please-never-log-this"

    async def scenario(bot: Bot) -> None:
        await bot.call(
            command("train", user_id=user_id, guild_id=guild_id, model="gpt2", tokenizer=secret)
        )
        await bot.call(
            command("status", user_id=user_id, guild_id=guild_id, focused="run_id", run_id="r")
        )

    caplog.set_level(logging.DEBUG)
    standin = run_bot(scenario, owner_id=owner_id)
    refusal, autocomplete = standin.interaction_answers()
    assert callback(refusal) == (MESSAGE, {"content": REFUSAL, "flags": EPHEMERAL, "tts": False})
    assert callback(autocomplete) == (AUTOCOMPLETE, {"choices": []})
    with TrainerClient(live_api.base_url) as api:
        assert api.list_runs().total == 0
    assert redis_client.smembers(WATCHING_KEY) == set()
    assert secret not in caplog.text
    refused = [r for r in caplog.records if getattr(r, "event", None) == "bot.refused"]
    assert [getattr(r, "user_id", None) for r in refused] == [user_id, user_id]


def write_history(run_folder: Path, steps: int) -> None:
    """The worker's record of a run: a `training.progress` log line per step, evals."""
    lines = [
        json.dumps({"event": "training.progress", "step": s, "loss": 3.0 - s / steps, "lr": 1e-3})
        for s in range(steps)
    ]
    with (run_folder / "logs.jsonl").open("a") as logs:
        logs.write("\n".join(lines) + "\n")
    (run_folder / "eval").mkdir(exist_ok=True)
    evals = [json.dumps({"step": s, "eval_loss": 2.5, "perplexity": 12.2}) for s in (0, steps - 1)]
    (run_folder / "eval" / "history.jsonl").write_text("\n".join(evals) + "\n")


def test_status_defers_then_shows_the_run_and_its_chart(
    run_bot: BotRunner, known: None, data_root: Path
) -> None:
    write_history(data_root / "runs" / "run-1", 5)

    async def scenario(bot: Bot) -> None:
        await bot.call(command("status", run_id="run-1"))

    standin = run_bot(scenario)
    deferred, shown = standin.interaction_answers()
    assert callback(deferred)[0] == DEFERRED  # acknowledged before any API call
    [embed] = shown.embeds
    assert embed["title"] == "run-1 · completed"
    assert embed["image"] == {"url": "attachment://chart-run-1.png"}
    assert list(shown.files) == ["chart-run-1.png"]
    assert shown.files["chart-run-1.png"].startswith(b"\x89PNG")


def test_api_errors_reach_the_owner_in_plain_words(run_bot: BotRunner) -> None:
    async def scenario(bot: Bot) -> None:
        await bot.call(command("status", run_id="run-nope"))
        await bot.call(command("train", model="char_lstm", tokenizer="tok-nope"))

    standin = run_bot(scenario)
    missing_run, missing_tokenizer = contents(standin)
    assert missing_run.startswith("The trainer API said: ")
    assert "run-nope" in missing_run
    assert missing_run.endswith("(NOT_FOUND)")
    assert "tok-nope" in missing_tokenizer


def test_an_unreachable_api_and_a_bug_are_explained_too(
    run_bot: BotRunner,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    known: None,
) -> None:
    async def status(bot: Bot) -> None:
        await bot.call(command("status", run_id="run-1"))

    down = run_bot(status, api_url="http://127.0.0.1:9")
    assert contents(down) == [
        "I can't reach the trainer API right now. Is it running? Try again in a moment."
    ]

    def broken_embed(run: object) -> object:
        raise RuntimeError("embed exploded")

    monkeypatch.setattr(actions, "status_embed", broken_embed)
    buggy = run_bot(status)
    assert contents(buggy) == ["Something went wrong on my side; the details are in the bot's log."]
    assert any(getattr(r, "event", None) == "bot.command_failed" for r in caplog.records)


def test_train_queues_a_run_and_watches_it(
    run_bot: BotRunner, live_api: LiveApi, redis_client: redis.Redis, known: None
) -> None:
    async def scenario(bot: Bot) -> None:
        await bot.call(
            command("train", model="char_lstm", tokenizer="tok-1", steps=50, precision="fp32")
        )
        await bot.call(command("train", model="char_lstm", tokenizer="tok-1", preset="huge"))

    standin = run_bot(scenario)
    queued, invalid = contents(standin)
    with TrainerClient(live_api.base_url) as api:
        [run] = [r for r in api.list_runs().items if r.run_id != "run-1"]
    assert queued == f"Queued `{run.run_id}`. I'm watching it and will post updates here."
    assert run.user_id == OWNER_ID
    assert redis_client.smembers(WATCHING_KEY) == {run.run_id.encode()}
    assert invalid.startswith("invalid training request: model: ")  # the field, in words
    assert "huge" in invalid
    assert invalid.endswith("(INVALID_INPUT)")


def test_train_delivers_queued_every_time(
    run_bot: BotRunner, redis_url: str, redis_client: redis.Redis, known: None
) -> None:
    """The watch exists before the API can publish: the notifier, running beside the
    commands, never acknowledges a run's `queued` event as unwatched."""
    sender = RecordingSender()

    async def scenario(bot: Bot) -> None:
        services = bot.client.services
        bus_client = await connect_async(redis_url)
        notifier = Notifier(AsyncEventBus(bus_client), services.watches, sender, OWNER_ID, FAST)
        task = asyncio.create_task(notifier.run())
        for _ in range(5):
            await bot.call(command("train", model="char_lstm", tokenizer="tok-1", steps=10))
        async with asyncio.timeout(WAIT_S):
            while not settled(redis_client):
                await asyncio.sleep(0.01)
        notifier.stop()
        await task
        await bus_client.aclose()

    standin = run_bot(scenario)
    run_ids = [str(c).split("`")[1] for c in contents(standin)]
    assert len(set(run_ids)) == 5
    assert sorted(sender.notices()) == sorted(f"Queued · {run_id}" for run_id in run_ids)


def test_watch_on_a_running_run_catches_up_from_its_state(
    run_bot: BotRunner, redis_client: redis.Redis
) -> None:
    add_runs(redis_client, "run-live", status=RunStatus.RUNNING)
    RunStateStore(redis_client).set_progress(
        "run-live", {"step": 40, "total_steps": 100, "fraction": 0.4, "loss": 2.5}
    )

    async def scenario(bot: Bot) -> None:
        await bot.call(command("watch", run_id="run-live"))

    standin = run_bot(scenario)
    [shown] = followups(standin)
    assert (shown.body or {})["content"] == "Watching `run-live`."
    [embed] = shown.embeds
    assert embed["title"] == "run-live · running"
    assert embed["description"] == "████████░░░░░░░░░░░░ 40%"


def test_watch_and_unwatch(run_bot: BotRunner, redis_client: redis.Redis, known: None) -> None:
    async def scenario(bot: Bot) -> None:
        await bot.call(command("watch", run_id="run-1"))
        await bot.call(command("watch", run_id="run-1"))
        assert bot.client.services.watches.is_watched("run-1")
        await bot.call(command("unwatch", run_id="run-1"))
        await bot.call(command("unwatch", run_id="run-1"))
        await bot.call(command("watch", run_id="run-nope"))

    standin = run_bot(scenario)
    assert contents(standin)[:4] == [
        "Watching `run-1`.",
        "Already watching `run-1`.",
        "Stopped watching `run-1`.",
        "I wasn't watching `run-1`.",
    ]
    assert contents(standin)[4].endswith("(NOT_FOUND)")
    assert redis_client.smembers(WATCHING_KEY) == set()


def add_runs(client: redis.Redis, *run_ids: str, status: RunStatus = RunStatus.QUEUED) -> None:
    store = RunStateStore(client)
    for run_id in run_ids:
        store.set_meta(run_id, kind="train_model", user_id=OWNER_ID, spec_json="{}")
        store.set_status(run_id, RunStatus.QUEUED)
        if status is not RunStatus.QUEUED:
            store.set_status(run_id, status)


def footer(record: Recorded) -> object:
    [embed] = record.embeds
    return json.loads(json.dumps(embed["footer"]))["text"]


def test_runs_are_paginated_with_buttons_only_the_owner_can_press(
    run_bot: BotRunner, redis_client: redis.Redis
) -> None:
    add_runs(redis_client, *(f"run-{i:02d}" for i in range(13)))

    async def scenario(bot: Bot) -> None:
        await bot.call(command("runs"))
        await bot.press("Next")
        await bot.press("Previous")
        await bot.press("Next", user_id=STRANGER, answers=1)

    standin = run_bot(scenario)
    answers = standin.interaction_answers()
    first, after_next, after_previous = (r for r in answers if r.path.startswith("/webhooks/"))
    assert footer(first) == "1-10 of 13"
    assert footer(after_next) == "11-13 of 13"
    assert footer(after_previous) == "1-10 of 13"
    assert after_next.method == "PATCH"  # the same message, edited
    assert [callback(r)[0] for r in answers if r.path.startswith("/interactions/")] == [
        DEFERRED,
        UPDATE_DEFERRED,
        UPDATE_DEFERRED,
        MESSAGE,  # the stranger's refusal
    ]


def test_cancel_asks_for_confirmation(
    run_bot: BotRunner, redis_client: redis.Redis, known: None
) -> None:
    add_runs(redis_client, "run-live", "run-spare", status=RunStatus.RUNNING)

    async def scenario(bot: Bot) -> None:
        await bot.call(command("cancel", run_id="run-live"))
        await bot.press("Keep it running")
        await bot.call(command("cancel", run_id="run-live"))
        await bot.press("Cancel the run")
        await bot.call(command("cancel", run_id="run-1"))
        await bot.call(command("cancel", run_id="run-spare"))
        RunStateStore(redis_client).set_status("run-spare", RunStatus.COMPLETED)
        await bot.press("Cancel the run")  # finished meanwhile: the API refuses

    standin = run_bot(scenario)
    said = contents(standin)
    assert said[:5] == [
        "Cancel `run-live` (running)?",
        "`run-live` keeps running.",
        "Cancel `run-live` (running)?",
        "Asked `run-live` to stop; it keeps a final checkpoint.",
        "`run-1` is already completed.",
    ]
    assert said[6].endswith("(CONFLICT)")
    assert redis_client.exists("runs:run-live:cancelled")


async def finish_generate(client: redis.Redis, *, result: bool) -> None:
    """Play the worker: complete (or fail) the first generate request that is not gen-1."""
    while True:
        keys = [k.decode() for k in client.keys("inference:generate:*") if isinstance(k, bytes)]
        new = [k for k in keys if not k.endswith(":gen-1")]
        if new:
            break
        await asyncio.sleep(0.01)
    queued = load_record(client, "generate", new[0].rsplit(":", 1)[1])
    assert queued is not None
    outcome: dict[str, object] = {
        "result": {
            "outputs": ["once upon a time"],
            "steps": [4],
            "eos_terminated": [False],
            "stop_reasons": ["max_new_tokens"],
            "prompt_tokens": 2,
            "seed": 7,
        }
    }
    if not result:
        outcome = {"error": {"code": "MODEL_NOT_FOUND", "message": "no checkpoint yet"}}
    done = queued.model_dump() | {"status": "completed" if result else "failed"} | outcome
    save_record(client, InferenceRecord.model_validate(done))


@pytest.mark.parametrize(
    ("result", "said"),
    [(True, "```\nonce upon a time\n```"), (False, "Generation failed: no checkpoint yet")],
)
def test_generate_waits_for_the_worker(
    run_bot: BotRunner, redis_client: redis.Redis, known: None, result: bool, said: str
) -> None:
    async def scenario(bot: Bot) -> None:
        worker = asyncio.create_task(finish_generate(redis_client, result=result))
        await bot.call(command("generate", run_id="run-1", prompt="once"))
        await worker

    standin = run_bot(scenario)
    assert contents(standin) == [said]


def test_generate_gives_up_politely_when_the_worker_is_slow(
    run_bot: BotRunner, known: None
) -> None:
    async def scenario(bot: Bot) -> None:
        await bot.call(command("generate", run_id="run-1", prompt="once"))

    standin = run_bot(scenario, generate_timeout_s=0.1)
    assert contents(standin) == [
        "The worker has not answered yet; it may be busy. Try again in a moment."
    ]


def test_run_ids_autocomplete(run_bot: BotRunner, redis_client: redis.Redis) -> None:
    add_runs(redis_client, "run-alpha", "run-beta", "other")

    async def scenario(bot: Bot) -> None:
        await bot.call(command("status", focused="run_id", run_id="RUN-"))

    standin = run_bot(scenario)
    [answer] = standin.interaction_answers()
    kind, data = callback(answer)
    assert kind == AUTOCOMPLETE
    choices = json.loads(json.dumps(data["choices"]))
    assert sorted(c["value"] for c in choices) == ["run-alpha", "run-beta"]
    assert {c["name"] for c in choices} == {"run-alpha · queued", "run-beta · queued"}

    down = run_bot(scenario, api_url="http://127.0.0.1:9")
    assert [callback(r) for r in down.interaction_answers()] == [(AUTOCOMPLETE, {"choices": []})]


def test_status_without_a_loss_history_has_no_chart(run_bot: BotRunner, known: None) -> None:
    async def scenario(bot: Bot) -> None:
        await bot.call(command("status", run_id="run-1"))

    standin = run_bot(scenario)
    [shown] = followups(standin)
    assert shown.files == {}
    assert "image" not in shown.embeds[0]


def test_a_command_that_fails_before_its_defer_is_still_answered(run_bot: BotRunner) -> None:
    async def scenario(bot: Bot) -> None:
        await bot.call(command("status"))  # no run_id: commands out of sync with Discord's copy

    standin = run_bot(scenario)
    [answer] = standin.interaction_answers()
    assert callback(answer) == (
        MESSAGE,
        {
            "content": "Something went wrong on my side; the details are in the bot's log.",
            "tts": False,
        },
    )


async def finish_predict(client: redis.Redis, prediction: dict[str, object] | None = None) -> None:
    """Play the worker: answer the first predict request with one prediction (by default a
    dual-agent one)."""
    while True:
        keys = [k.decode() for k in client.keys("inference:predict:*") if isinstance(k, bytes)]
        new = [k for k in keys if not k.endswith(":pred-1")]
        if new:
            break
        await asyncio.sleep(0.01)
    queued = load_record(client, "predict", new[0].rsplit(":", 1)[1])
    assert queued is not None
    text = "Work was fine. I can't sleep at night."
    criteria = [
        {"criterion": name, "probability": p, "threshold": 0.5, "matched": p >= 0.5}
        for name, p in (("SLEEP_ISSUES", 0.91), ("FATIGUE", 0.2), ("ANHEDONIA", 0.05))
    ]
    evidence = {"start": 15, "end": len(text), "text": text[15:]}
    if prediction is None:
        prediction = {"criteria": criteria, "matched": ["SLEEP_ISSUES"], "evidence": evidence}
    result = {"predictions": [prediction]}
    done = queued.model_dump() | {"status": "completed", "result": result}
    save_record(client, InferenceRecord.model_validate(done))


def test_predict_shows_the_criteria_and_the_evidence(
    run_bot: BotRunner, redis_client: redis.Redis, known: None
) -> None:
    async def scenario(bot: Bot) -> None:
        worker = asyncio.create_task(finish_predict(redis_client))
        await bot.call(command("predict", run_id="run-1", text="I can't sleep at night."))
        await worker

    standin = run_bot(scenario)
    assert contents(standin) == [
        "Matched: SLEEP_ISSUES\n"
        "Likeliest: SLEEP_ISSUES 0.91, FATIGUE 0.20, ANHEDONIA 0.05\n"
        "Evidence (chars 15-38): > I can't sleep at night."
    ]


def test_train_a_dual_agent_model_needs_no_tokenizer(
    run_bot: BotRunner, live_api: LiveApi, known: None
) -> None:
    async def scenario(bot: Bot) -> None:
        await bot.call(command("train", model="dual_agent", steps=20, precision="fp32"))
        await bot.call(command("train", model="gpt2", steps=20))  # a language model needs one

    standin = run_bot(scenario)
    queued, refused = contents(standin)
    assert queued.startswith("Queued `run-")
    assert "needs tokenizer_id" in refused and refused.endswith("(INVALID_INPUT)")
    with TrainerClient(live_api.base_url) as api:
        [run] = [r for r in api.list_runs().items if r.run_id != "run-1"]
    assert run.kind == "train_model"


def test_preset_autocomplete_follows_the_chosen_family(run_bot: BotRunner) -> None:
    async def scenario(bot: Bot) -> None:
        await bot.call(command("train", focused="preset", model="dual_agent", preset=""))
        await bot.call(command("train", focused="preset", model="char_lstm", preset="me"))

    standin = run_bot(scenario)
    answers = [callback(answer) for answer in standin.interaction_answers()]
    assert [kind for kind, _ in answers] == [AUTOCOMPLETE, AUTOCOMPLETE]
    dual, lstm = (json.loads(json.dumps(data["choices"])) for _, data in answers)
    assert [c["value"] for c in dual] == ["small", "tiny"]
    assert [c["value"] for c in lstm] == ["medium"]


def test_predict_shows_a_classifiers_label_and_likeliest_labels(
    run_bot: BotRunner, redis_client: redis.Redis, known: None
) -> None:
    top = [{"label": "s3", "probability": 0.8}, {"label": "ec2", "probability": 0.15}]
    prediction: dict[str, object] = {
        "family": "classifier",
        "label": "s3",
        "probability": 0.8,
        "top": top,
    }

    async def scenario(bot: Bot) -> None:
        worker = asyncio.create_task(finish_predict(redis_client, prediction))
        await bot.call(command("predict", run_id="run-1", text="Creates a bucket."))
        await worker

    standin = run_bot(scenario)
    assert contents(standin) == ["Label: s3\nLikeliest: s3 0.80, ec2 0.15"]
