"""Dependencies as `Annotated` aliases, so handlers read like
`def get_run(run_id: RunIdPath, client: RedisDep, data_root: DataRootDep) -> RunPublic`.

Handlers that touch Redis are plain `def`s on the sync client (FastAPI runs them in its
threadpool), so they reuse platform_core's run-state and queue helpers as they are; the SSE
handlers use the asyncio client. The providers are `async def` because they do no I/O: they
then run on the event loop instead of costing a thread hop each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import redis
import redis.asyncio
from fastapi import Depends, Header, Request
from fastapi import Path as PathParam

from platform_core.event_bus import AsyncEventBus, EventBus
from platform_core.settings import Settings
from platform_core.specs import ID_REGEX


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_redis(request: Request) -> redis.Redis:
    client: redis.Redis = request.app.state.sync_redis
    return client


async def get_async_redis(request: Request) -> redis.asyncio.Redis:
    client: redis.asyncio.Redis = request.app.state.redis
    return client


async def get_event_bus(request: Request) -> EventBus:
    """The event bus on the configured stream, for handlers that queue or cancel runs."""
    bus: EventBus = request.app.state.bus
    return bus


async def get_async_event_bus(request: Request) -> AsyncEventBus:
    """The asyncio twin of `get_event_bus`, for the event streams."""
    bus: AsyncEventBus = request.app.state.async_bus
    return bus


async def get_data_root(request: Request) -> Path:
    data_root: Path = request.app.state.data_root  # resolved once, when the app was built
    return data_root


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
AsyncRedisDep = Annotated[redis.asyncio.Redis, Depends(get_async_redis)]
DataRootDep = Annotated[Path, Depends(get_data_root)]
EventBusDep = Annotated[EventBus, Depends(get_event_bus)]
AsyncEventBusDep = Annotated[AsyncEventBus, Depends(get_async_event_bus)]

# ids in paths follow the run id rule; anything else is a 422 before a handler runs
RunIdPath = Annotated[str, PathParam(pattern=ID_REGEX, description="a run id")]
RequestIdPath = Annotated[str, PathParam(pattern=ID_REGEX, description="a request id")]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",  # visible ASCII: it travels in a header
        description="same key and same body: the first answer again, nothing queued twice",
    ),
]
