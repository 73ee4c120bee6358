"""Builds the FastAPI app: settings, Redis (the embedded one when none is configured), request
ids, body size limit, API key, typed error bodies and the routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import Depends, FastAPI

from platform_core.redis_connection import connect, connect_async, resolve_redis_url
from platform_core.settings import Settings, load_settings
from trainer_api.errors import install_error_handlers
from trainer_api.middleware import BodySizeLimitMiddleware, RequestIdMiddleware
from trainer_api.routes import artifacts, events, health, inference, logs, runs, tokenizers
from trainer_api.security import require_api_key

_log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    resolved = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configured = resolved.redis.url.get_secret_value() if resolved.redis.url else None
        url, embedded = resolve_redis_url(configured, resolved.data_root)
        timeout_s = resolved.redis.connect_timeout_s
        # async for the SSE streams and probes; sync for the handlers in the threadpool
        app.state.redis = await connect_async(url, timeout_s=timeout_s)
        app.state.sync_redis = await anyio.to_thread.run_sync(
            lambda: connect(url, timeout_s=timeout_s)
        )
        _log.info("api ready", extra={"event": "api.started"})
        try:
            yield
        finally:
            app.state.sync_redis.close()
            await app.state.redis.aclose()
            if embedded is not None:
                embedded.release()

    app = FastAPI(title="Model Trainer API", version="0.1.0", lifespan=lifespan)
    app.state.settings = resolved
    app.state.data_root = resolved.data_root.resolve()
    # the last added runs first: request ids exist before a body is refused for its size
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=resolved.security.max_request_bytes)
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    app.include_router(health.router)  # open to probes, whatever the API key
    protected = [Depends(require_api_key)]
    for router in (
        runs.router,  # first: `GET /runs/{id}` is the most polled route, matched in order
        tokenizers.router,
        logs.router,
        events.router,
        inference.router,
        artifacts.router,
    ):
        app.include_router(router, dependencies=protected)
    return app
