"""Interaction payloads as Discord's gateway delivers them (INTERACTION_CREATE), for driving
the bot's command tree and views without a gateway."""

from __future__ import annotations

import itertools
import json

import discord

from tests.bot.discord_standin import APP_ID, OWNER_ID, user
from trainer_bot.commands import BotClient

GUILD_ID = 5_555
DM_CHANNEL = {"id": "9242", "type": 1, "recipients": [user(OWNER_ID, "owner")]}
_ids = itertools.count(70_000)

Option = dict[str, object]


def _base(kind: int, user_id: int, guild_id: int | None) -> dict[str, object]:
    number = next(_ids)
    payload: dict[str, object] = {
        "id": str(number),
        "application_id": str(APP_ID),
        "type": kind,
        "token": f"interaction-token-{number}",
        "version": 1,
        "attachment_size_limit": 8 * 1024 * 1024,
        "locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"1": str(user_id)},
    }
    person = user(user_id, f"user-{user_id}")
    if guild_id is None:
        payload |= {"user": person, "channel": DM_CHANNEL, "context": 1}
    else:
        member = {
            "user": person,
            "roles": [],
            "joined_at": "2026-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": "0",
        }
        payload |= {"guild_id": str(guild_id), "member": member, "context": 0}
    return payload


def _option(name: str, value: str | int, focused: bool) -> Option:
    option: Option = {"name": name, "type": 4 if isinstance(value, int) else 3, "value": value}
    if focused:
        option["focused"] = True
    return option


def command(
    name: str,
    *,
    user_id: int = OWNER_ID,
    guild_id: int | None = None,
    focused: str | None = None,
    **options: str | int,
) -> str:
    """A slash command (or, with `focused`, an autocomplete request) as JSON."""
    payload = _base(4 if focused else 2, user_id, guild_id)
    payload["data"] = {
        "id": "1",
        "name": name,
        "type": 1,
        "options": [_option(k, v, k == focused) for k, v in options.items()],
    }
    return json.dumps(payload)


def subcommand(
    group: str,
    name: str,
    user_id: int = OWNER_ID,
    focused: str | None = None,
    /,
    **options: str | int,
) -> str:
    """A group's subcommand (`/study start ...`), or with `focused` its autocomplete, as JSON."""
    payload = json.loads(command(group, user_id=user_id, focused=focused))
    inner = [_option(k, v, k == focused) for k, v in options.items()]
    payload["data"]["options"] = [{"name": name, "type": 1, "options": inner}]
    return json.dumps(payload)


def button(custom_id: str, message: dict[str, object], *, user_id: int = OWNER_ID) -> str:
    """A button press on `message` as JSON."""
    payload = _base(3, user_id, None)
    payload["data"] = {"custom_id": custom_id, "component_type": 2}
    payload["message"] = message
    return json.dumps(payload)


def interaction(client: BotClient, raw: str) -> discord.Interaction[BotClient]:
    """The discord.py Interaction the gateway would build from `raw`."""
    return discord.Interaction(data=json.loads(raw), state=client._connection)
