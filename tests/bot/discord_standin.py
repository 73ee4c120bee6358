"""A local stand-in for the part of Discord's REST API the bot uses, for discord.py's real
HTTP client to talk to (point `discord.http.Route.BASE` at `api_base`).

It serves what login asks (`users/@me`, `oauth2/applications/@me`), opening a DM
(`users/@me/channels`), posting messages (`channels/{id}/messages`, JSON or multipart with
files) and editing them (`PATCH channels/{id}/messages/{id}`), syncing commands, and the
interaction endpoints (`interactions/{id}/{token}/callback`, `webhooks/{app}/{token}`
follow-ups and `@original` edits). Like Discord it:

- answers JSON with `Content-Type: application/json` exactly (discord.py parses nothing else);
- rate-limits the messages route (sends and edits together) with a fixed-window bucket,
  advertised through `X-RateLimit-Limit/Remaining/Reset/Reset-After/Bucket`, answering 429
  with `Via` and a JSON `retry_after` when a client sends past it;
- plays scripted answers first (`script`): 429s with or without `Via` (a Cloudflare ban),
  or errors such as 403.

Every request is recorded, so tests assert on what reached "Discord".
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count

from aiohttp import BodyPartReader, web
from pydantic import TypeAdapter

BOT_ID = 1_000
APP_ID = 1_001
OWNER_ID = 4_242
JSON_TYPE = "application/json"  # no charset: discord.py compares the header exactly
_EMBEDS: TypeAdapter[list[dict[str, object]]] = TypeAdapter(list[dict[str, object]])
_OBJECTS = _EMBEDS
_OBJECT: TypeAdapter[dict[str, object]] = TypeAdapter(dict[str, object])


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, object] | None  # the JSON object sent, or a multipart's payload_json
    files: dict[str, bytes]  # multipart files by file name
    at: float = 0.0  # time.monotonic() when it arrived

    @property
    def embeds(self) -> list[dict[str, object]]:
        return _EMBEDS.validate_python((self.body or {}).get("embeds", []))


@dataclass(frozen=True)
class Scripted:
    status: int
    body: dict[str, object] | str
    headers: dict[str, str] = field(default_factory=dict)


def rate_limited(retry_after: float, *, via: bool = True) -> Scripted:
    """A 429 from Discord's API (`via`), or from Cloudflare (no `Via`, plain text)."""
    if via:
        body: dict[str, object] | str = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": False,
        }
        return Scripted(429, body, {"Via": "1.1 google", "Retry-After": str(retry_after)})
    return Scripted(429, "error code: 1015", {"Retry-After": str(retry_after)})


def user(user_id: int, name: str, *, bot: bool = False) -> dict[str, object]:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
    }


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"Content-Type": JSON_TYPE, **(headers or {})},
    )


class DiscordStandIn:
    def __init__(self, *, limit: int = 5, window_s: float = 1.0, token_valid: bool = True) -> None:
        self.token_valid = token_valid  # False: login is refused with a 401, as for a bad token
        self.limit = limit  # messages per window on the messages route (Discord: 5 per 5 s)
        self.window_s = window_s
        self.requests: list[Recorded] = []
        self.scripts: deque[Scripted] = deque()
        self.served_429 = 0
        self.commands: list[dict[str, object]] = []
        self.webhook_messages: list[dict[str, object]] = []  # follow-ups and edits, as answered
        self._ids = count(10_000)
        self._window_start = 0.0
        self._used = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- what tests read --------------------------------------------------------------------

    def script(self, *answers: Scripted) -> None:
        """Answer the next posts to a channel with these, in order, before the real route."""
        self.scripts.extend(answers)

    def posted(self, path_part: str, method: str = "POST") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and path_part in r.path]

    @property
    def messages(self) -> list[Recorded]:
        """Messages the bot posted to channels (not the ones refused)."""
        return [
            r
            for r in self.posted("/messages")
            if r.path.startswith("/channels/") and r.headers.get("X-Answered") == "200"
        ]

    @property
    def edits(self) -> list[Recorded]:
        """Edits of messages in channels that Discord took."""
        return [
            r
            for r in self.posted("/messages/", "PATCH")
            if r.path.startswith("/channels/") and r.headers.get("X-Answered") == "200"
        ]

    @property
    def channel_writes(self) -> list[Recorded]:
        """Sends and edits that Discord took, in order: what its 5-per-5-s limit counts."""
        return sorted([*self.messages, *self.edits], key=lambda r: r.at)

    def interaction_answers(self) -> list[Recorded]:
        """What the bot answered to interactions, in order: callbacks (defer, message,
        autocomplete), follow-ups and edits of the original response."""
        return [r for r in self.requests if r.path.startswith(("/interactions/", "/webhooks/"))]

    # ---- serving ----------------------------------------------------------------------------

    async def start(self, port: int = 0) -> str:
        """Serve on `port` (a free one by default; the same one again to come back after an
        outage); returns the base URL for `discord.http.Route.BASE`."""
        app = web.Application()
        app.router.add_route("*", "/api/v10/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = int(self._runner.addresses[0][1])
        return f"http://127.0.0.1:{self.port}/api/v10"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _dispatch(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        arrived = time.monotonic()
        sent, files = await _read_body(request)
        body = _OBJECT.validate_python(sent) if isinstance(sent, dict) else None
        response = self._answer(request.method, path, body, sent)
        headers = dict(request.headers) | {"X-Answered": str(response.status)}
        self.requests.append(Recorded(request.method, path, headers, body, files, arrived))
        return response

    def _answer(
        self, method: str, path: str, body: dict[str, object] | None, sent: object
    ) -> web.Response:
        parts = path.strip("/").split("/")
        if method == "GET" and path == "/users/@me":
            if not self.token_valid:
                return json_response({"message": "401: Unauthorized", "code": 0}, status=401)
            return json_response(user(BOT_ID, "trainer-bot", bot=True))
        if method == "GET" and path == "/oauth2/applications/@me":
            return json_response(self._application())
        if method == "POST" and path == "/users/@me/channels":
            assert body is not None
            recipient = int(str(body["recipient_id"]))
            channel = {"id": str(9_000 + recipient % 1000), "type": 1, "last_message_id": None}
            return json_response(channel | {"recipients": [user(recipient, "owner")]})
        if method == "POST" and parts[0] == "channels" and parts[-1] == "messages":
            return self._post_message(parts[1], body)
        if method == "PATCH" and parts[0] == "channels" and parts[-2] == "messages":
            return self._post_message(parts[1], body, message_id=parts[-1])
        if method == "PUT" and parts[0] == "applications" and parts[-1] == "commands":
            return json_response(self._sync(sent))
        if method == "POST" and parts[0] == "interactions":
            return json_response(self._callback(parts[1], body))
        if parts[0] == "webhooks" and method in {"POST", "PATCH"}:
            self.webhook_messages.append(self._message("9242", body))
            return json_response(self.webhook_messages[-1])
        return json_response({"message": "404: Not Found", "code": 0}, status=404)

    def _application(self) -> dict[str, object]:
        return {
            "id": str(APP_ID),
            "name": "trainer-bot",
            "description": "",
            "icon": None,
            "bot_public": False,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "owner": user(OWNER_ID, "owner"),
            "flags": 0,
        }

    def _sync(self, body: object) -> list[dict[str, object]]:
        self.commands = [
            c | {"id": str(next(self._ids)), "application_id": str(APP_ID), "version": "1"}
            for c in _OBJECTS.validate_python(body)
        ]
        return self.commands

    def _callback(self, interaction_id: str, body: dict[str, object] | None) -> dict[str, object]:
        assert body is not None
        kind = body["type"]
        return {
            "interaction": {
                "id": interaction_id,
                "type": 2,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": False,
            },
            "resource": {"type": kind},
        }

    def _post_message(
        self, channel_id: str, body: dict[str, object] | None, message_id: str | None = None
    ) -> web.Response:
        """A new message, or (`message_id`) an edit: both count against the channel's limit."""
        if self.scripts:
            scripted = self.scripts.popleft()
            self.served_429 += scripted.status == 429
            if isinstance(scripted.body, str):
                return web.Response(
                    status=scripted.status, text=scripted.body, headers=scripted.headers
                )
            return json_response(scripted.body, scripted.status, scripted.headers)
        now = time.monotonic()
        if now - self._window_start >= self.window_s:
            self._window_start, self._used = now, 0
        reset_after = self.window_s - (now - self._window_start)
        if self._used >= self.limit:
            self.served_429 += 1
            return json_response(
                {
                    "message": "You are being rate limited.",
                    "retry_after": reset_after,
                    "global": False,
                },
                429,
                {"Via": "1.1 google", "Retry-After": f"{reset_after:.3f}"}
                | self._bucket_headers(0, reset_after),
            )
        self._used += 1
        headers = self._bucket_headers(self.limit - self._used, reset_after)
        message = self._message(channel_id, body)
        if message_id is not None:
            message["id"] = message_id
        return json_response(message, headers=headers)

    def _bucket_headers(self, remaining: int, reset_after: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": "messages-bucket",
        }

    def _message(self, channel_id: str, body: dict[str, object] | None) -> dict[str, object]:
        body = body or {}
        return {
            "id": str(next(self._ids)),
            "channel_id": channel_id,
            "type": 0,
            "content": body.get("content") or "",
            "author": user(BOT_ID, "trainer-bot", bot=True),
            "embeds": body.get("embeds") or [],
            "attachments": [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "flags": 0,
            "components": body.get("components") or [],
        }


async def _read_body(request: web.Request) -> tuple[object, dict[str, bytes]]:
    """The JSON a request carried (a multipart's payload_json), and its files."""
    if request.content_type.startswith("multipart/"):
        body: object = None
        files: dict[str, bytes] = {}
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)  # discord.py never nests multiparts
            data = await part.read()
            if part.name == "payload_json":
                body = json.loads(data)
            else:
                files[part.filename or part.name or "?"] = bytes(data)
        return body, files
    raw = await request.read()
    return (json.loads(raw) if raw else None), {}
