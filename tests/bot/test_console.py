"""Console mode's prompt: the Discord commands typed at a terminal, answered by a real API
server, replies as readable lines and charts saved as PNG files."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
import redis

from platform_core.http_client import AsyncTrainerClient
from platform_core.redis_connection import connect_async
from platform_core.run_state import RunStateStore, RunStatus
from tests.api.conftest import LiveApi
from tests.bot.discord_standin import OWNER_ID
from tests.bot.test_commands import add_runs, write_history
from trainer_bot.actions import BotServices
from trainer_bot.console import HELP, Console, TerminalOutput
from trainer_bot.watch_store import WATCHING_KEY, WatchStore

pytestmark = pytest.mark.integration


def type_lines(live_api: LiveApi, redis_url: str, chart_dir: Path, *lines: str) -> list[str]:
    """Type `lines` at the console's prompt; what it printed, line by line."""
    printed = io.StringIO()

    async def scenario() -> None:
        client = await connect_async(redis_url)
        api = AsyncTrainerClient(live_api.base_url, backoff_s=0.0, max_retries=0)
        services = BotServices(api, WatchStore(client), OWNER_ID)
        console = Console(services, OWNER_ID, TerminalOutput(printed), chart_dir)
        reader = asyncio.StreamReader()
        reader.feed_data("".join(f"{line}\n" for line in lines).encode())
        reader.feed_eof()
        await console.run(reader)
        await api.aclose()
        await client.aclose()

    asyncio.run(scenario())
    return printed.getvalue().splitlines()


def test_the_console_runs_the_commands_and_saves_charts(
    live_api: LiveApi,
    redis_url: str,
    redis_client: redis.Redis,
    known: None,
    data_root: Path,
    tmp_path: Path,
) -> None:
    write_history(data_root / "runs" / "run-1", 50)
    add_runs(redis_client, "run-live", status=RunStatus.RUNNING)
    charts = tmp_path / "charts"

    printed = type_lines(
        live_api,
        redis_url,
        charts,
        "/status run-1",
        "/watch run-1",
        "/train model=char_lstm tokenizer=tok-1 steps=20",
        "/cancel run-live",
        "n",
        "/cancel run-live",
        "yes",
        "/runs",
        "/status",
        "/status run-nope",
        "/bogus",
        "/quit",
        "/status run-1",  # after /quit: never read
    )

    assert printed[0] == "console mode: type /help for the commands"
    status = printed[1]
    assert status.startswith("run-1 · completed · ")
    assert "Ended: " in status
    assert printed[2] == f"chart saved to {charts / 'chart-run-1.png'}"
    assert (charts / "chart-run-1.png").read_bytes().startswith(b"\x89PNG")
    assert printed[3] == "Watching run-1."
    assert printed[4].startswith("run-1 · completed · ")  # the catch-up, from its state
    queued = printed[5]
    assert queued.startswith("Queued run-")
    run_id = queued.split()[1].rstrip(".")
    assert {run_id.encode(), b"run-1"} <= redis_client.smembers(WATCHING_KEY)
    assert printed[6:10] == [
        "Cancel run-live (running)? [y/N]",
        "run-live keeps running.",
        "Cancel run-live (running)? [y/N]",
        "Asked run-live to stop; it keeps a final checkpoint.",
    ]
    assert RunStateStore(redis_client).status("run-live") is RunStatus.RUNNING
    assert redis_client.exists("runs:run-live:cancelled")
    assert printed[10].startswith("Runs · ")
    assert printed[11] == "/status: missing run_id"
    after_usage = printed.index("/status: missing run_id") + 1 + len(HELP.splitlines())
    assert printed[after_usage].startswith("The trainer API said: ")
    assert printed[after_usage].endswith("(NOT_FOUND)")
    assert printed[after_usage + 1] == "unknown command /bogus"
    assert printed[-1] == HELP.splitlines()[-1]  # nothing after /quit


def test_the_console_starts_a_study_and_shows_its_status(
    live_api: LiveApi, redis_url: str, redis_client: redis.Redis, known: None, tmp_path: Path
) -> None:
    printed = type_lines(
        live_api,
        redis_url,
        tmp_path,
        "/study start model=char_lstm tokenizer=tok-1 trials=4 parallelism=2 steps=20 name=c",
        "/study status",
        "/study start model=char_lstm tokenizer=tok-1 space=nope",
        "/study start model=char_lstm tokenizer=tok-1 trials=many",
    )
    queued = printed[1]
    assert queued.startswith("Queued study study-") and "4 trials, 2 at a time" in queued
    study_id = queued.split()[2].rstrip(":")
    assert redis_client.smembers(WATCHING_KEY) == {study_id.encode()}
    usage = "/study: /study status <study_id>, or /study start model=<family> ..."
    assert printed[2] == usage
    after_usage = 2 + 1 + len(HELP.splitlines())
    assert printed[after_usage].startswith("the search space must be one of lr, lr-batch")
    assert printed[after_usage + 1].startswith("/study: trials must be a whole number")

    status = type_lines(live_api, redis_url, tmp_path, f"/study status {study_id}")[1]
    assert status.startswith(f"{study_id} · queued · c · Trials: 0 / 4 done: 0 completed")
    assert "2 in flight" in status and "Best trial: —" in status
