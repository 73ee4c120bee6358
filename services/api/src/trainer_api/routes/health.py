"""Liveness and readiness."""

from __future__ import annotations

import tempfile
from pathlib import Path

import redis.asyncio
from fastapi import APIRouter, Request
from redis.exceptions import RedisError

from platform_core.api_models import HealthStatus, ReadyStatus
from platform_core.queue import TRAINING_QUEUE

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> HealthStatus:
    """The API process is up."""
    return HealthStatus(status="ok")


@router.get("/readyz")
async def readyz(request: Request) -> ReadyStatus:
    """Redis answers, the data root is writable; with the training queue's depth."""
    client: redis.asyncio.Redis = request.app.state.redis
    data_root: Path = request.app.state.settings.data_root
    try:
        await client.ping()
        depth = int(await client.llen(f"rq:queue:{TRAINING_QUEUE}"))
        redis_ok = True
    except RedisError:
        redis_ok, depth = False, 0
    writable = _writable(data_root)
    ready = redis_ok and writable
    return ReadyStatus(
        status="ready" if ready else "not_ready",
        redis=redis_ok,
        data_root_writable=writable,
        queue_depth=depth,
    )


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".readyz-"):
            return True
    except OSError:
        return False
