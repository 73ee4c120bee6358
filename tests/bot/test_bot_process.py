"""The bot process: `python -m trainer_bot` in console mode, and TrainerBot (commands plus
notifier) logging in to the Discord stand-in."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import discord
import pytest
import redis

from platform_core.errors import AppError, ExitCode
from platform_core.event_bus import AsyncEventBus
from platform_core.http_client import AsyncTrainerClient
from platform_core.redis_connection import connect_async
from platform_core.settings import Settings, load_settings
from tests.api.conftest import LiveApi
from tests.bot import factories
from tests.bot.discord_standin import OWNER_ID, DiscordStandIn
from tests.bot.helpers import FAST, WAIT_S, discord_client, publish
from tests.bot.test_commands import write_history
from trainer_bot import bot as bot_module
from trainer_bot.actions import BotServices
from trainer_bot.bot import TrainerBot, main, notifier_config, serve
from trainer_bot.heartbeat import heartbeat_key, unhealthy_reason
from trainer_bot.watch_store import WATCHING_KEY, WatchStore

pytestmark = pytest.mark.integration
BOT_ENV = ("DISCORD_TOKEN", "DISCORD_OWNER_ID", "REDIS_URL", "DATA_ROOT")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment with no bot settings of the developer's, run from an empty folder (no
    .env); the root logger's handlers are put back afterwards."""
    for name in [*BOT_ENV, *(n for n in os.environ if n.startswith("APP__"))]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APP_SECRETS_DIR", str(tmp_path / "no-secrets"))
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield dict(os.environ)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


def test_console_mode_writes_each_dm_to_the_log_and_stops_on_sigterm(
    clean_env: dict[str, str], redis_url: str, redis_client: redis.Redis, data_root: Path
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    publish(redis_client, factories.queued(), factories.failed())
    env = clean_env | {
        "REDIS_URL": redis_url,
        "DATA_ROOT": str(data_root),
        "DISCORD_OWNER_ID": str(OWNER_ID),
        "APP__LOGGING__FORMAT": "json",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer_bot"],
        env=env,
        stdin=subprocess.DEVNULL,  # as in a container: no prompt, the notifier alone
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines = []
    try:
        for line in process.stderr:
            lines.append(json.loads(line))
            if sum(entry.get("event") == "bot.dm" for entry in lines) == 2:
                break
        # both notifier loops went round to send those DMs, so the container's check passes
        check = subprocess.run(
            [sys.executable, "-m", "trainer_bot.healthcheck"],
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            check=False,
        )
        assert (check.returncode, check.stdout) == (0, "healthy\n"), check.stderr
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT_S) == ExitCode.OK
    finally:
        process.kill()
    events = [line.get("event") for line in lines]
    assert {"bot.console_mode", "bot.started"} <= set(events)
    [start] = [line for line in lines if line.get("event") == "bot.console_mode"]
    assert start["message"].startswith("console mode (DISCORD_TOKEN is not set)")  # unmasked
    dms = [line for line in lines if line.get("event") == "bot.dm"]
    assert all(dm["user_id"] == OWNER_ID for dm in dms)
    assert dms[0]["service"] == "model-trainer-bot"
    assert dms[0]["message"].startswith("Queued · run-1 · ")
    assert dms[1]["message"].startswith("Failed · run-1 · CUDA out of memory · Error: ")


def test_trainer_bot_syncs_commands_and_sends_dms_until_closed(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_client.sadd(WATCHING_KEY, "run-1")
    publish(redis_client, factories.queued())
    standin = DiscordStandIn()

    async def scenario() -> None:
        client = await connect_async(redis_url)
        services = BotServices(
            AsyncTrainerClient("http://127.0.0.1:9"), WatchStore(client), OWNER_ID
        )
        bot = TrainerBot(services, AsyncEventBus(client), FAST)
        async with discord_client(standin, monkeypatch, bot):
            async with asyncio.timeout(WAIT_S):
                while not standin.messages:
                    await asyncio.sleep(0.01)
        assert bot.notifier.sent == 1
        # logged in over REST only: no gateway session, so no commands, and the check says so
        assert not bot.connected()
        fields = redis_client.hgetall(heartbeat_key(socket.gethostname()))
        assert unhealthy_reason(fields, time.time()) == "not connected to the Discord gateway"
        await bot.close()  # closing twice is harmless
        await client.aclose()

    asyncio.run(scenario())
    # train status runs watch unwatch cancel generate predict models study
    assert len(standin.commands) == 11
    [message] = standin.messages
    assert [e["title"] for e in message.embeds] == ["Queued · run-1"]


def test_a_token_without_an_owner_is_a_configuration_error(redis_url: str) -> None:
    async def scenario() -> None:
        client = await connect_async(redis_url)
        services = BotServices(AsyncTrainerClient("http://127.0.0.1:9"), WatchStore(client), None)
        with pytest.raises(AppError, match="DISCORD_OWNER_ID"):
            TrainerBot(services, AsyncEventBus(client))
        await client.aclose()

    asyncio.run(scenario())


def test_serve_in_discord_mode_logs_in_with_the_token(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, data_root: Path
) -> None:
    standin = DiscordStandIn(token_valid=False)
    settings = Settings.model_validate(
        {
            "data_root": data_root,
            "redis": {"url": redis_url},
            "discord": {"token": "refused-token", "owner_id": OWNER_ID},
        }
    )

    async def scenario() -> None:
        monkeypatch.setattr(discord.http.Route, "BASE", await standin.start())
        try:
            with pytest.raises(discord.LoginFailure):
                await serve(settings, FAST)
        finally:
            await standin.stop()

    asyncio.run(scenario())
    [login] = standin.posted("/users/@me", "GET")
    assert login.headers["Authorization"] == "Bot refused-token"


@pytest.mark.parametrize(
    ("env", "failure"),
    [
        ({"APP__LOGGING__LEVEL": "CHATTY"}, "APP__LOGGING__LEVEL"),
        ({"DISCORD_TOKEN": "some-token"}, "DISCORD_OWNER_ID must be set"),
        ({"DISCORD_TOKEN": "refused-token", "DISCORD_OWNER_ID": "4242"}, "Discord refused"),
    ],
    ids=["bad-setting", "token-without-owner", "token-refused"],
)
def test_main_turns_failures_into_a_configuration_exit_code(
    clean_env: dict[str, str],
    redis_url: str,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    failure: str,
) -> None:
    for name, value in ({"REDIS_URL": redis_url, "DATA_ROOT": str(data_root)} | env).items():
        monkeypatch.setenv(name, value)
    refusing = DiscordStandIn(token_valid=False)

    async def serve_with_standin(settings: Settings) -> None:
        monkeypatch.setattr(discord.http.Route, "BASE", await refusing.start())
        try:
            await serve(settings)
        finally:
            await refusing.stop()

    monkeypatch.setattr(bot_module, "serve", serve_with_standin)
    assert main() == ExitCode.CONFIG
    assert failure in capsys.readouterr().err  # the service's own log handler


def test_console_mode_starts_the_embedded_redis_when_none_is_configured(
    data_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.model_validate({"data_root": data_root})

    def console_mode() -> bool:
        return any(getattr(r, "event", None) == "bot.console_mode" for r in caplog.records)

    async def scenario() -> None:
        running = asyncio.create_task(serve(settings, FAST))
        async with asyncio.timeout(WAIT_S):
            while not console_mode():
                await asyncio.sleep(0.01)
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the bot: its notifier stops
            await running

    caplog.set_level(logging.INFO)
    asyncio.run(scenario())
    assert (data_root / "redis").is_dir()


def test_the_live_interval_and_best_eval_notices_are_settings(
    clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert notifier_config(load_settings()).live_every_s == 10.0
    monkeypatch.setenv("APP__DISCORD__LIVE_UPDATE_S", "30")
    monkeypatch.setenv("APP__DISCORD__NOTIFY_BEST_EVAL", "true")
    config = notifier_config(load_settings())
    assert (config.live_every_s, config.notify_best_eval) == (30.0, True)


def test_python_m_trainer_bot_is_a_prompt_when_stdin_is_one(
    clean_env: dict[str, str],
    live_api: LiveApi,
    known: None,
    redis_url: str,
    redis_client: redis.Redis,
    data_root: Path,
) -> None:
    write_history(data_root / "runs" / "run-1", 20)
    redis_client.sadd(WATCHING_KEY, "run-9")
    env = clean_env | {
        "REDIS_URL": redis_url,
        "DATA_ROOT": str(data_root),
        "APP__API__BASE_URL": live_api.base_url,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer_bot"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        assert process.stdout.readline() == "console mode: type /help for the commands\n"
        publish(redis_client, factories.queued("run-9"))
        assert process.stdout.readline().startswith("Queued · run-9 · ")  # a notice
        process.stdin.write("/status run-1\n/quit\n")
        process.stdin.flush()
        assert process.stdout.readline().startswith("run-1 · completed · ")
        chart = data_root / "bot-charts" / "chart-run-1.png"
        assert process.stdout.readline() == f"chart saved to {chart}\n"
        assert chart.read_bytes().startswith(b"\x89PNG")
        assert process.wait(timeout=WAIT_S) == ExitCode.OK  # /quit ends the bot
    finally:
        process.kill()
