"""The buttons: `/runs` pages and the `/cancel` confirmation. Only the owner may press them."""

from __future__ import annotations

import discord

from platform_core.api_models import RunQuery
from platform_core.http_client import AsyncTrainerClient
from trainer_bot.embeds import runs_embed
from trainer_bot.guards import owner_only, report_failure

RUNS_PAGE_SIZE = 10
VIEW_TIMEOUT_S = 300.0  # buttons stop answering after five minutes


class OwnerView(discord.ui.View):
    """Buttons only the owner may press."""

    def __init__(self, owner_id: int | None) -> None:
        super().__init__(timeout=VIEW_TIMEOUT_S)
        self.owner_id = owner_id

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await owner_only(interaction, self.owner_id)

    async def on_error(
        self,
        interaction: discord.Interaction,
        error: Exception,
        item: discord.ui.Item[discord.ui.View],
        /,
    ) -> None:
        await report_failure(interaction, error)


class RunsPager(OwnerView):
    """`/runs`: Previous / Next through the run list, newest first."""

    def __init__(self, api: AsyncTrainerClient, owner_id: int | None) -> None:
        super().__init__(owner_id)
        self.api = api
        self.offset = 0

    async def page(self, offset: int) -> discord.Embed:
        runs = await self.api.list_runs(RunQuery(limit=RUNS_PAGE_SIZE, offset=offset))
        self.offset = offset
        self.previous_page.disabled = offset == 0
        self.next_page.disabled = offset + len(runs.items) >= runs.total
        return runs_embed(runs)

    async def _turn(self, interaction: discord.Interaction, offset: int) -> None:
        await interaction.response.defer()
        embed = await self.page(max(0, offset))
        await interaction.edit_original_response(embed=embed, view=self)

    @discord.ui.button(label="Previous", style=discord.ButtonStyle.secondary)
    async def previous_page(
        self, interaction: discord.Interaction, _: discord.ui.Button[RunsPager]
    ) -> None:
        await self._turn(interaction, self.offset - RUNS_PAGE_SIZE)

    @discord.ui.button(label="Next", style=discord.ButtonStyle.secondary)
    async def next_page(
        self, interaction: discord.Interaction, _: discord.ui.Button[RunsPager]
    ) -> None:
        await self._turn(interaction, self.offset + RUNS_PAGE_SIZE)


class ConfirmCancel(OwnerView):
    """`/cancel`: nothing is cancelled until the owner confirms."""

    def __init__(self, api: AsyncTrainerClient, owner_id: int | None, run_id: str) -> None:
        super().__init__(owner_id)
        self.api = api
        self.run_id = run_id

    @discord.ui.button(label="Cancel the run", style=discord.ButtonStyle.danger)
    async def confirm(
        self, interaction: discord.Interaction, _: discord.ui.Button[ConfirmCancel]
    ) -> None:
        await interaction.response.defer()
        result = await self.api.cancel_run(self.run_id)
        done = {
            "cancelled": f"Cancelled `{self.run_id}`.",
            "requested": f"Asked `{self.run_id}` to stop; it keeps a final checkpoint.",
        }
        self.stop()
        await interaction.edit_original_response(content=done[result.outcome], view=None)

    @discord.ui.button(label="Keep it running", style=discord.ButtonStyle.secondary)
    async def keep(
        self, interaction: discord.Interaction, _: discord.ui.Button[ConfirmCancel]
    ) -> None:
        await interaction.response.defer()
        self.stop()
        await interaction.edit_original_response(
            content=f"`{self.run_id}` keeps running.", view=None
        )
