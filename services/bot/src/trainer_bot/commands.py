"""The bot's application commands: `/train`, `/status`, `/runs`, `/watch`, `/unwatch`,
`/cancel`, `/generate`, `/predict`, `/models`, `/study start|status` and `/retrain`, answered in
DMs with the owner only.

Every command defers first (Discord's 3-second deadline) and follows up once the API has
answered. The tree runs the owner check (`guards.owner_only`) before any command or
autocomplete: a refused interaction gets one short line, nothing runs, and its text is never
logged. Failures reach the owner in plain words (`guards.report_failure`).
"""

from __future__ import annotations

import io

import discord
from discord import app_commands

from platform_core.api_models import RunQuery
from platform_core.http_client import ApiError
from platform_core.specs import MODEL_PRESETS, ModelFamily, PrecisionChoice
from platform_core.study_specs import MAX_PARALLELISM, MAX_TRIALS, Direction, StudyMetric
from trainer_bot import actions, registry, retraining, studies
from trainer_bot.actions import BotServices
from trainer_bot.guards import owner_only, report_failure
from trainer_bot.views import ConfirmCancel, RunsPager

AUTOCOMPLETE_MAX = 25  # Discord shows at most 25 choices


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


async def answer(interaction: Interaction, reply: actions.Reply) -> None:
    """Send `reply` as the deferred interaction's follow-up."""
    files = []
    if reply.chart is not None:
        files.append(discord.File(io.BytesIO(reply.chart.data), filename=reply.chart.filename))
    embeds = [] if reply.embed is None else [reply.embed]
    await interaction.followup.send(reply.text or "", embeds=embeds, files=files)


async def presets(interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
    """The size presets of the family chosen so far (every family's before one is)."""
    family = getattr(interaction.namespace, "model", None)
    families = [family] if family in MODEL_PRESETS else list(MODEL_PRESETS)
    names = sorted({name for f in families for name in MODEL_PRESETS[f]})
    return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n.lower()]


@app_commands.command()
@app_commands.describe(
    model="Model family",
    tokenizer="Id of a trained tokenizer (gpt2, char_lstm; the others train their own)",
    preset="Size preset of the family (tiny, small, ...)",
    corpus="Corpus in the data root, empty for the demo (dual_agent: posts; classifier: dataset)",
    steps="Optimizer steps to train for",
    precision="Numeric precision; auto picks the best for the device",
)
@app_commands.autocomplete(preset=presets)
async def train(
    interaction: Interaction,
    *,
    model: ModelFamily,
    tokenizer: str | None = None,
    preset: str = "tiny",
    corpus: str | None = None,
    steps: app_commands.Range[int, 1, 10_000_000] = 1_000,
    precision: PrecisionChoice = "auto",
) -> None:
    """Start training a model."""
    await interaction.response.defer(thinking=True)
    reply = await actions.train(
        interaction.client.services,
        user_id=interaction.user.id,
        model=model,
        tokenizer=tokenizer,
        preset=preset,
        corpus=corpus,
        steps=steps,
        precision=precision,
        idempotency_key=f"discord-{interaction.id}",
    )
    await answer(interaction, reply)


@app_commands.command()
@app_commands.describe(run_id="The run")
@app_commands.autocomplete(run_id=run_ids)
async def status(interaction: Interaction, run_id: str) -> None:
    """State, progress, loss and ETA of a run, with its chart."""
    await interaction.response.defer(thinking=True)
    await answer(interaction, await actions.status(interaction.client.services, run_id))


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
    """Send this run's updates to this DM, starting with where it is now."""
    await interaction.response.defer(thinking=True)
    await answer(interaction, await actions.watch(interaction.client.services, run_id))


@app_commands.command()
@app_commands.describe(run_id="The run to stop following")
@app_commands.autocomplete(run_id=run_ids)
async def unwatch(interaction: Interaction, run_id: str) -> None:
    """Stop sending this run's updates."""
    await interaction.response.defer(thinking=True)
    await answer(interaction, await actions.unwatch(interaction.client.services, run_id))


@app_commands.command()
@app_commands.describe(run_id="The run to cancel")
@app_commands.autocomplete(run_id=run_ids)
async def cancel(interaction: Interaction, run_id: str) -> None:
    """Cancel a run (after you confirm)."""
    await interaction.response.defer(thinking=True)
    services = interaction.client.services
    run, refusal = await actions.cancellable(services, run_id)
    if refusal is not None:
        await interaction.followup.send(refusal)
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
    key = f"discord-{interaction.id}"
    reply = await actions.generate(
        interaction.client.services, run_id, prompt, max_new_tokens, idempotency_key=key
    )
    await answer(interaction, reply)


@app_commands.command()
@app_commands.describe(model="A registered model: its versions and their stages")
async def models(interaction: Interaction, model: str | None = None) -> None:
    """Registered models with their production versions."""
    await interaction.response.defer(thinking=True)
    await answer(interaction, await registry.models(interaction.client.services, model))


@app_commands.command()
@app_commands.describe(run_id="A finished dual_agent or classifier run", text="A text to label")
@app_commands.autocomplete(run_id=run_ids)
async def predict(
    interaction: Interaction, run_id: str, text: app_commands.Range[str, 1, 2000]
) -> None:
    """The criteria a dual-agent run finds in a post, and its evidence sentence."""
    await interaction.response.defer(thinking=True)
    key = f"discord-{interaction.id}"
    reply = await actions.predict(interaction.client.services, run_id, text, idempotency_key=key)
    await answer(interaction, reply)


# ---- /study -----------------------------------------------------------------------------

study = app_commands.Group(name="study", description="Optuna studies: start one, see one")


async def study_ids(interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Recent studies whose id contains what the owner typed."""
    try:
        found = await studies.recent(interaction.client.services, AUTOCOMPLETE_MAX)
    except ApiError:
        return []
    return [
        app_commands.Choice(name=f"{s.study_id} · {s.status} · {s.name}"[:100], value=s.study_id)
        for s in found
        if current.lower() in s.study_id.lower()
    ]


async def search_spaces(interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
    """The named search spaces (any JSON object may be typed instead)."""
    return [
        app_commands.Choice(name=name, value=name)
        for name in studies.SEARCH_SPACES
        if current.lower() in name
    ]


@study.command(name="start")
@app_commands.describe(
    model="Model family",
    space=f"A named space ({', '.join(studies.SEARCH_SPACES)}) or JSON: path -> distribution",
    trials="Trials in all",
    tokenizer="Id of a trained tokenizer (gpt2, char_lstm; the others train their own)",
    preset="Size preset of the family (tiny, small, ...)",
    corpus="Corpus in the data root, empty for the demo (dual_agent: posts; classifier: dataset)",
    steps="Optimizer steps of each trial",
    parallelism="Trials at once (one per free worker)",
    metric="Validation metric each trial reports",
    direction="Whether the metric should go down or up",
    name="The study's name (default: family-preset)",
)
@app_commands.autocomplete(preset=presets, space=search_spaces)
async def study_start(
    interaction: Interaction,
    *,
    model: ModelFamily,
    space: app_commands.Range[str, 1, 4000] = studies.DEFAULT_SPACE,
    trials: app_commands.Range[int, 1, MAX_TRIALS] = studies.DEFAULT_TRIALS,
    tokenizer: str | None = None,
    preset: str = "tiny",
    corpus: str | None = None,
    steps: app_commands.Range[int, 1, 10_000_000] = studies.DEFAULT_STEPS,
    parallelism: app_commands.Range[int, 1, MAX_PARALLELISM] = 1,
    metric: StudyMetric = "eval_loss",
    direction: Direction = "minimize",
    name: app_commands.Range[str, 1, 128] | None = None,
) -> None:
    """Start an Optuna study of a model's hyperparameters."""
    await interaction.response.defer(thinking=True)
    reply = await studies.start(
        interaction.client.services,
        user_id=interaction.user.id,
        model=model,
        space=space,
        trials=trials,
        tokenizer=tokenizer,
        preset=preset,
        corpus=corpus,
        steps=steps,
        parallelism=parallelism,
        metric=metric,
        direction=direction,
        name=name,
    )
    await answer(interaction, reply)


@study.command(name="status")
@app_commands.describe(study_id="The study")
@app_commands.autocomplete(study_id=study_ids)
async def study_status(interaction: Interaction, study_id: str) -> None:
    """A study's trials, its best so far and, once drawn, its optimisation history."""
    await interaction.response.defer(thinking=True)
    await answer(interaction, await studies.status(interaction.client.services, study_id))


async def model_names(interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Registered model names containing what the owner typed."""
    try:
        names = await retraining.model_names(interaction.client.services, current, AUTOCOMPLETE_MAX)
    except ApiError:
        return []
    return [app_commands.Choice(name=name, value=name) for name in names]


@app_commands.command()
@app_commands.describe(model="A registered classifier with a production version")
@app_commands.autocomplete(model=model_names)
async def retrain(interaction: Interaction, model: str) -> None:
    """Retrain a model on newer data; it is promoted only when better."""
    await interaction.response.defer(thinking=True)
    await answer(interaction, await retraining.retrain(interaction.client.services, model))


def add_commands(tree: TrainerTree) -> None:
    tree.add_command(train)
    tree.add_command(status)
    tree.add_command(runs)
    tree.add_command(watch)
    tree.add_command(unwatch)
    tree.add_command(cancel)
    tree.add_command(generate)
    tree.add_command(models)
    tree.add_command(predict)
    tree.add_command(study)
    tree.add_command(retrain)
