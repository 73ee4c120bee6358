"""API key check: when `security.api_key` is configured, every route except the health
probes (`/healthz`, `/readyz`, which orchestrators call without credentials) and the schema
requires `X-Api-Key` with that value. The comparison takes constant time; a failure is
logged with the method and path, never with the key that was sent."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from platform_core.api_calls import API_KEY_HEADER
from platform_core.errors import AppError, ErrorCode
from platform_core.settings import Settings

_log = logging.getLogger(__name__)
# auto_error=False: a missing key is our typed 401, not FastAPI's 403
_HEADER = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


async def require_api_key(request: Request, sent: Annotated[str | None, Security(_HEADER)]) -> None:
    """Refuse the request with 401 UNAUTHORIZED unless it carries the configured key."""
    # the settings straight from the app, not through a dependency: this runs on every
    # request, and each dependency FastAPI solves costs tens of microseconds
    settings: Settings = request.app.state.settings
    expected = settings.security.api_key
    if expected is None:
        return
    if sent is not None and hmac.compare_digest(
        sent.encode("utf-8"), expected.get_secret_value().encode("utf-8")
    ):
        return
    _log.warning(
        "authentication failed: %s X-Api-Key",
        "missing" if sent is None else "wrong",
        extra={
            "event": "api.auth_failed",
            "method": request.method,
            "path": request.url.path,
        },
    )
    raise AppError(ErrorCode.UNAUTHORIZED, f"missing or invalid {API_KEY_HEADER} header")
