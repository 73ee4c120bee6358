"""API key check: when `security.api_key` is configured, every route except the open ones
(the health probes, which orchestrators call without credentials, and the schema and its
pages) requires `X-Api-Key` with that value. The comparison takes constant time; a failure is
logged with the method and path, never with the key that was sent.

The check is a pure ASGI middleware rather than a FastAPI dependency: it runs before a body is
read, and it costs no dependency solving on every request of the most polled route
(`GET /runs/{id}`, see docs/benchmarks.md). FastAPI documents security only from dependencies,
so `declare_api_key` adds the scheme to the OpenAPI schema itself.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Collection

from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from platform_core.api_calls import API_KEY_HEADER
from platform_core.errors import ErrorCode
from trainer_api.middleware import header, send_error

SCHEME = "APIKeyHeader"  # the scheme's name in the OpenAPI schema
_HEADER = API_KEY_HEADER.lower().encode()  # ASGI header names are lower case
_log = logging.getLogger(__name__)


class ApiKeyMiddleware:
    """Refuses a request to any path but `open_paths` with 401 UNAUTHORIZED unless it carries
    the configured key. Installed only when a key is configured."""

    def __init__(self, app: ASGIApp, *, api_key: SecretStr, open_paths: Collection[str]) -> None:
        self.app = app
        self._expected = api_key
        self._open = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or _route_path(scope) in self._open:
            await self.app(scope, receive, send)  # lifespan, and the open paths
            return
        sent = header(scope, _HEADER)
        expected = self._expected.get_secret_value().encode("utf-8")
        if sent is not None and hmac.compare_digest(sent.encode("latin-1"), expected):
            await self.app(scope, receive, send)
            return
        _log.warning(
            "authentication failed: %s X-Api-Key",
            "missing" if sent is None else "wrong",
            extra={
                "event": "api.auth_failed",
                "method": str(scope.get("method", "")),
                "path": str(scope.get("path", "")),
            },
        )
        if scope["type"] == "websocket":  # refused before the handshake: the client sees 403
            await send({"type": "websocket.close", "code": 1008})  # policy violation
            return
        message = f"missing or invalid {API_KEY_HEADER} header"
        await send_error(scope, send, ErrorCode.UNAUTHORIZED, message)


def _route_path(scope: Scope) -> str:
    """The path as the routes see it: without the `root_path` a proxy mounts the API under,
    cut only at a segment boundary (as Starlette's router does)."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", "")).rstrip("/")
    if root and (path == root or path.startswith(f"{root}/")):
        return path[len(root) :]
    return path


def declare_api_key(schema: dict[str, object], open_paths: Collection[str]) -> None:
    """Adds the API key scheme to an OpenAPI `schema` (in place) and marks every operation
    outside `open_paths` as requiring it. Declared whether or not a key is configured: the
    schema describes the API, and any deployment may turn the key on."""
    components = schema.setdefault("components", {})
    paths = schema.get("paths")
    if not isinstance(components, dict) or not isinstance(paths, dict):
        raise ValueError("an OpenAPI schema's components and paths are objects")
    schemes = components.setdefault("securitySchemes", {})
    schemes[SCHEME] = {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
    for path, operations in paths.items():
        if path in open_paths or not isinstance(operations, dict):
            continue
        for operation in operations.values():
            if isinstance(operation, dict):
                operation["security"] = [{SCHEME: []}]
