"""The bot process: commands and notifier, in Discord mode or in console mode.

- Discord mode (`DISCORD_TOKEN` set): `TrainerBot` logs in, syncs its commands, answers
  interactions through the gateway, and its notifier sends DMs over REST.
- Console mode (no token, the embedded default): the same commands at a terminal prompt
  (`console`), notices as readable lines, charts saved as PNG files under
  `<data root>/bot-charts/`. With standard input at its end (a container), the notifier runs
  alone and writes each notice to the log (`bot.dm`, live updates `bot.live`).

Either way the watches and the event stream's position live in Redis, so a restart picks up
where the last run stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable

import discord

from platform_core.errors import AppError, ErrorCode, ExitCode
from platform_core.event_bus import AsyncEventBus
from platform_core.http_client import AsyncTrainerClient
from platform_core.logging import configure_logging
from platform_core.redis_connection import connect_async, resolve_redis_url
from platform_core.settings import Settings, load_settings
from trainer_bot import actions, studies
from trainer_bot.actions import BotServices
from trainer_bot.commands import BotClient
from trainer_bot.console import Console, TerminalOutput, stdin_reader
from trainer_bot.notifier import ChartSource, Notifier, NotifierConfig, PlotSource
from trainer_bot.senders import ConsoleSender, DiscordSender
from trainer_bot.watch_store import WatchStore

logger = logging.getLogger(__name__)

CONSOLE_RECIPIENT = 0  # console mode with no owner configured: DMs are logged to "user 0"
CHART_FOLDER = "bot-charts"  # console mode saves charts here, under the data root
CONSOLE_WINDOW_S = 0.001


class TrainerBot(BotClient):
    """The Discord client plus its notifier, started with the client and stopped with it."""

    def __init__(
        self, services: BotServices, bus: AsyncEventBus, config: NotifierConfig | None = None
    ) -> None:
        super().__init__(services)
        if services.owner_id is None:
            raise AppError(
                ErrorCode.CONFIG_INVALID, "DISCORD_OWNER_ID must be set when DISCORD_TOKEN is"
            )
        sender = DiscordSender(self)
        self.notifier = Notifier(
            bus,
            services.watches,
            sender,
            services.owner_id,
            config,
            connected=self.connected,
            charts=chart_source(services),
            plots=plot_source(services),
        )
        self._notifier_task: asyncio.Task[None] | None = None

    def connected(self) -> bool:
        """Whether the gateway session, which brings the commands, is up now: DMs go over REST,
        but a bot that cannot hear its commands does not work. discord.py reconnects by itself;
        the health check's retries give it time to."""
        return self.is_ready() and self.ws.open

    async def setup_hook(self) -> None:
        await super().setup_hook()
        self._notifier_task = asyncio.create_task(self.notifier.run(), name="notifier")

    async def close(self) -> None:
        if self._notifier_task is not None:
            self.notifier.stop()
            await self._notifier_task
            self._notifier_task = None
        await super().close()


@contextlib.asynccontextmanager
async def bot_services(settings: Settings) -> AsyncIterator[tuple[BotServices, AsyncEventBus]]:
    """Redis (the embedded one when none is configured), the bus and the API client."""
    configured = settings.redis.url.get_secret_value() if settings.redis.url else None
    url, embedded = resolve_redis_url(configured, settings.data_root)
    try:
        redis_client = await connect_async(url, timeout_s=settings.redis.connect_timeout_s)
        api_key = settings.security.api_key
        api = AsyncTrainerClient(
            settings.api_base_url, api_key=api_key.get_secret_value() if api_key else None
        )
        bus = AsyncEventBus(
            redis_client, stream=settings.redis.events_stream, maxlen=settings.redis.events_maxlen
        )
        try:
            yield BotServices(api, WatchStore(redis_client), settings.discord.owner_id), bus
        finally:
            await api.aclose()
            await redis_client.aclose()
    finally:
        if embedded is not None:
            embedded.release()


def _on_stop_signals(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(stop_signal, callback)


def chart_source(services: BotServices) -> ChartSource:
    """Completion charts from the API (`GET /runs/{id}/chart.png`): the whole run's history."""

    async def chart(run_id: str) -> bytes | None:
        attachment = await actions.chart_of(services, run_id)
        return None if attachment is None else attachment.data

    return chart


def plot_source(services: BotServices) -> PlotSource:
    """A finished study's plots from the API (`GET /studies/{id}/plots/{name}`)."""
    return functools.partial(studies.plots, services)


async def serve_console(
    settings: Settings,
    services: BotServices,
    bus: AsyncEventBus,
    config: NotifierConfig | None = None,
) -> None:
    """Console mode: the prompt on standard input, the notifier beside it."""
    recipient = services.owner_id or CONSOLE_RECIPIENT
    lines = await stdin_reader()
    chart_dir = settings.data_root / CHART_FOLDER
    # with a prompt, notices are printed beside it; without one, they go to the log
    output = TerminalOutput() if lines is not None else None
    sender = ConsoleSender(output, chart_dir)
    # a terminal has no rate limit: Discord's 5-per-5-s window shrinks to 5 per millisecond
    config = dataclasses.replace(config or NotifierConfig(), dm_window_s=CONSOLE_WINDOW_S)
    notifier = Notifier(
        bus,
        services.watches,
        sender,
        recipient,
        config,
        charts=chart_source(services),
        plots=plot_source(services),
    )
    _on_stop_signals(notifier.stop)
    where = "commands at this prompt" if lines is not None else "no prompt (stdin is not one)"
    logger.info(
        "console mode (DISCORD_TOKEN is not set): %s, DMs as text",
        where,
        extra={"event": "bot.console_mode"},
    )
    running = asyncio.create_task(notifier.run())
    if lines is not None and output is not None:
        console = Console(services, recipient, output, chart_dir)
        prompt = asyncio.create_task(console.run(lines))
        await asyncio.wait([running, prompt], return_when=asyncio.FIRST_COMPLETED)
        if not prompt.done():
            prompt.cancel()
        elif prompt.result() or sys.stdin.isatty():
            notifier.stop()  # /quit, or the end of a terminal's input (Ctrl-D), ends the bot
    await running


def notifier_config(settings: Settings) -> NotifierConfig:
    """The notifier's settings that an operator may change (`APP__DISCORD__...`)."""
    return NotifierConfig(
        live_every_s=settings.discord.live_update_s,
        notify_best_eval=settings.discord.notify_best_eval,
    )


async def serve(settings: Settings, config: NotifierConfig | None = None) -> None:
    """Run the bot until SIGINT or SIGTERM (or /quit at the console's prompt)."""
    config = config or notifier_config(settings)
    async with bot_services(settings) as (services, bus):
        token = settings.discord.token
        if token is None:
            await serve_console(settings, services, bus, config)
            return
        bot = TrainerBot(services, bus, config)
        closing: set[asyncio.Task[None]] = set()
        _on_stop_signals(lambda: closing.add(asyncio.create_task(bot.close())))
        async with bot:
            await bot.start(token.get_secret_value())


def main() -> int:
    """Run the bot; the exit code says why it stopped (0, or the CLI contract's codes)."""
    try:
        settings = load_settings()
    except AppError as exc:
        configure_logging("model-trainer-bot")
        return _failed(exc)
    configure_logging(
        "model-trainer-bot",
        level=settings.logging.level,
        fmt=settings.log_format,
        secret_values=settings.secret_values(),
    )
    try:
        asyncio.run(serve(settings))
    except AppError as exc:
        return _failed(exc)
    except discord.LoginFailure:
        refused = "Discord refused DISCORD_TOKEN; check the bot's token in the developer portal"
        return _failed(AppError(ErrorCode.CONFIG_INVALID, refused))
    return ExitCode.OK


def _failed(exc: AppError) -> int:
    logger.error(exc.message, extra={"event": "bot.failed", "error_code": exc.code.value})
    return exc.exit_code
