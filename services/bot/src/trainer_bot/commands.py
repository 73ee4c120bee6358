"""The bot's application commands: `/train`, `/status`, `/runs`, `/watch`, `/unwatch`,
`/cancel` and `/generate`, answered in DMs with the owner only.

Every command defers first (Discord's 3-second deadline) and follows up once the API has
answered. The tree runs the owner check (`guards.owner_only`) before any command or
autocomplete: a refused interaction gets one short line, nothing runs, and its text is never
logged. Failures reach the owner in plain words (`guards.report_failure`).
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

import discord
from discord import app_commands
from pydantic import ValidationError

from platform_core.api_models import RunCreate, RunQuery
from platform_core.errors import invalid_input
from platform_core.http_client import ApiError, AsyncTrainerClient
from platform_core.specs import GenerateRequest, ModelFamily, PrecisionChoice, TrainRunSpec
from trainer_bot.charts import loss_chart_png
from trainer_bot.embeds import status_embed
from trainer_bot.guards import owner_only, report_failure
from trainer_bot.limits import truncate
from trainer_bot.views import ConfirmCancel, RunsPager
from trainer_bot.watch_store import WatchStore

AUTOCOMPLETE_MAX = 25  # Discord shows at most 25 choices
LOG_LINES_FOR_CHART = 1_000  # /status draws the loss curve from the run's last log lines
MESSAGE_MAX = 2_000  # characters in a message's content


@dataclass(frozen=True)
class BotServices:
    """What the commands use; built once by the entry point."""

    api: AsyncTrainerClient
    watches: WatchStore
    owner_id: int | None  # None: nobody is the owner, every interaction is refused
    generate_timeout_s: float = 120.0  # /generate waits this long for the worker's answer
    poll_interval_s: float = 0.5  # and asks for it this often


class TrainerTree(app_commands.CommandTree[discord.Client]):
    def __init__(self, client: discord.Client, owner_id: int | None) -> None:
        dm_only = app_commands.AppCommandContext(
            guild=False, dm_channel=True, private_channel=False
        )
        super().__init__(client, allowed_contexts=dm_only)
        self.owner_id = owner_id

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await owner_only(interaction, self.owner_id)

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError, /
    ) -> None:
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        await report_failure(interaction, cause)


# ---- the client and its commands -------------------------------------------------------


class BotClient(discord.Client):
    """A discord.py client carrying the services its commands use, and their tree. It needs no
    privileged intents: commands arrive as interactions, DMs are sent over REST."""

    def __init__(self, services: BotServices) -> None:
        # a 429 asking for more than 30 s comes back as discord.RateLimited instead of a
        # silent sleep, so the notifier's bucket knows (30 s is discord.py's smallest setting)
        super().__init__(intents=discord.Intents(guilds=True), max_ratelimit_timeout=30.0)
        self.services = services
        self.tree = TrainerTree(self, services.owner_id)
        add_commands(self.tree)

    async def setup_hook(self) -> None:
        await self.tree.sync()


Interaction = discord.Interaction[BotClient]


async def run_ids(interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Recent runs whose id contains what the owner typed."""
    try:
        runs = await interaction.client.services.api.list_runs(RunQuery(limit=AUTOCOMPLETE_MAX))
    except ApiError:
        return []
    return [
        app_commands.Choice(name=f"{run.run_id} · {run.status}", value=run.run_id)
        for run in runs.items
        if current.lower() in run.run_id.lower()
    ]


@app_commands.command()
@app_commands.describe(
    model="Model family",
    tokenizer="Id of a trained tokenizer",
    preset="Size preset of the family (tiny, small, ...)",
    corpus="Corpus path inside the data root; empty for the demo corpus",
    steps="Optimizer steps to train for",
    precision="Numeric precision; auto picks the best for the device",
)
async def train(
    interaction: Interaction,
    *,
    model: ModelFamily,
    tokenizer: str,
    preset: str = "tiny",
    corpus: str | None = None,
    steps: app_commands.Range[int, 1, 10_000_000] = 1_000,
    precision: PrecisionChoice = "auto",
) -> None:
    """Start training a model."""
    await interaction.response.defer(thinking=True)
    services = interaction.client.services
    wanted = {
        "model": {"family": model, "preset": preset},
        "tokenizer_id": tokenizer,
        "corpus": {"path": corpus},
        "train": {"max_steps": steps, "precision": precision},
    }
    try:
        spec = TrainRunSpec.model_validate(wanted)
    except ValidationError as exc:
        raise invalid_input(exc, what="training request") from exc
    body = RunCreate(spec=spec, user_id=interaction.user.id)
    accepted = await services.api.train_model(body, idempotency_key=f"discord-{interaction.id}")
    await services.watches.watch(accepted.run_id)
    await interaction.followup.send(
        f"Queued `{accepted.run_id}`. I'm watching it and will post updates here."
    )


@app_commands.command()
@app_commands.describe(run_id="The run")
@app_commands.autocomplete(run_id=run_ids)
async def status(interaction: Interaction, run_id: str) -> None:
    """State, progress, loss and ETA of a run, with its loss curve."""
    await interaction.response.defer(thinking=True)
    api = interaction.client.services.api
    embed = status_embed(await api.get_run(run_id))
    logs = await api.run_logs(run_id, tail=LOG_LINES_FOR_CHART)
    points = [
        (line.step, line.loss)
        for line in logs.lines
        if line.step is not None and line.loss is not None
    ]
    png = await asyncio.to_thread(loss_chart_png, f"{run_id} · training loss", points)
    files = []
    if png is not None:
        files.append(discord.File(io.BytesIO(png), filename="loss.png"))
        embed.set_image(url="attachment://loss.png")
    await interaction.followup.send(embed=embed, files=files)


@app_commands.command()
async def runs(interaction: Interaction) -> None:
    """Recent runs, newest first."""
    await interaction.response.defer(thinking=True)
    services = interaction.client.services
    pager = RunsPager(services.api, services.owner_id)
    await interaction.followup.send(embed=await pager.page(0), view=pager)


@app_commands.command()
@app_commands.describe(run_id="The run to follow")
@app_commands.autocomplete(run_id=run_ids)
async def watch(interaction: Interaction, run_id: str) -> None:
    """Send this run's updates to this DM."""
    await interaction.response.defer(thinking=True)
    services = interaction.client.services
    await services.api.get_run(run_id)  # an unknown run is refused in the API's words
    added = await services.watches.watch(run_id)
    await interaction.followup.send(f"{'Watching' if added else 'Already watching'} `{run_id}`.")


@app_commands.command()
@app_commands.describe(run_id="The run to stop following")
@app_commands.autocomplete(run_id=run_ids)
async def unwatch(interaction: Interaction, run_id: str) -> None:
    """Stop sending this run's updates."""
    await interaction.response.defer(thinking=True)
    removed = await interaction.client.services.watches.unwatch(run_id)
    text = f"Stopped watching `{run_id}`." if removed else f"I wasn't watching `{run_id}`."
    await interaction.followup.send(text)


@app_commands.command()
@app_commands.describe(run_id="The run to cancel")
@app_commands.autocomplete(run_id=run_ids)
async def cancel(interaction: Interaction, run_id: str) -> None:
    """Cancel a run (after you confirm)."""
    await interaction.response.defer(thinking=True)
    services = interaction.client.services
    run = await services.api.get_run(run_id)
    if run.status not in {"queued", "running"}:
        await interaction.followup.send(f"`{run_id}` is already {run.status}.")
        return
    view = ConfirmCancel(services.api, services.owner_id, run_id)
    await interaction.followup.send(f"Cancel `{run_id}` ({run.status})?", view=view)


@app_commands.command()
@app_commands.describe(
    run_id="A trained run", prompt="Text to continue", max_new_tokens="Tokens to generate"
)
@app_commands.autocomplete(run_id=run_ids)
async def generate(
    interaction: Interaction,
    run_id: str,
    prompt: str,
    max_new_tokens: app_commands.Range[int, 1, 512] = 64,
) -> None:
    """Generate text with a run's model."""
    await interaction.response.defer(thinking=True)
    services = interaction.client.services
    request = GenerateRequest(prompt=prompt, max_new_tokens=max_new_tokens)
    key = f"discord-{interaction.id}"
    accepted = await services.api.generate(run_id, request, idempotency_key=key)
    async with asyncio.timeout(services.generate_timeout_s):
        record = await services.api.get_generate(run_id, accepted.request_id)
        while record.status in {"queued", "running"}:
            await asyncio.sleep(services.poll_interval_s)
            record = await services.api.get_generate(run_id, accepted.request_id)
    if record.result is None:
        reason = record.error.message if record.error else "the worker gave no output"
        await interaction.followup.send(f"Generation failed: {reason}")
        return
    text = truncate(record.result.outputs[0], MESSAGE_MAX - len("```\n\n```"))
    await interaction.followup.send(f"```\n{text}\n```")


def add_commands(tree: TrainerTree) -> None:
    tree.add_command(train)
    tree.add_command(status)
    tree.add_command(runs)
    tree.add_command(watch)
    tree.add_command(unwatch)
    tree.add_command(cancel)
    tree.add_command(generate)
