"""Builds the FastAPI app: settings, Redis (the embedded one when none is configured), request
ids, API key, body size limit, typed error bodies and the routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from platform_core.event_bus import AsyncEventBus, EventBus
from platform_core.redis_connection import connect, connect_async, resolve_redis_url
from platform_core.run_state import RunStateStore
from platform_core.settings import Settings, load_settings
from trainer_api.errors import (
    document_common_errors,
    exact_integer_bounds,
    install_error_handlers,
)
from trainer_api.live_state import LiveStateReader
from trainer_api.middleware import (
    BodySizeLimitMiddleware,
    HeadAsGetMiddleware,
    RequestIdMiddleware,
    declare_head_operations,
)
from trainer_api.routes import (
    artifacts,
    charts,
    datasets,
    events,
    health,
    inference,
    logs,
    model_serving,
    models,
    retraining,
    runs,
    studies,
    tokenizers,
)
from trainer_api.security import ApiKeyMiddleware, declare_api_key

_log = logging.getLogger(__name__)


class TrainerApi(FastAPI):
    """FastAPI whose OpenAPI schema declares the API key (see `security.py`)."""

    def openapi(self) -> dict[str, object]:
        generated = self.openapi_schema is None
        schema = super().openapi()  # generated on the first call, then kept
        if generated:
            declare_api_key(schema, open_paths(self))
            probes = frozenset(getattr(route, "path", "") for route in health.router.routes)
            document_common_errors(schema, probes)
            declare_head_operations(schema)
            exact_integer_bounds(schema)
        return schema


def open_paths(app: FastAPI) -> frozenset[str]:
    """What answers without the API key: the probes, the schema and its documentation pages."""
    schema_pages = (
        app.openapi_url,
        app.docs_url,
        app.redoc_url,
        app.swagger_ui_oauth2_redirect_url,
    )
    probes = (getattr(route, "path", None) for route in health.router.routes)
    return frozenset(path for path in (*schema_pages, *probes) if path)


def create_app(settings: Settings | None = None) -> FastAPI:
    resolved = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configured = resolved.redis.url.get_secret_value() if resolved.redis.url else None
        url, embedded = resolve_redis_url(configured, resolved.data_root)
        timeout_s = resolved.redis.connect_timeout_s
        # async for the SSE streams and probes; sync for the handlers in the threadpool
        app.state.redis = await connect_async(url, timeout_s=timeout_s)
        app.state.live_reader = LiveStateReader(app.state.redis)
        app.state.sync_redis = await anyio.to_thread.run_sync(
            lambda: connect(url, timeout_s=timeout_s)
        )
        # listings read the run indexes: built from older keys once, by whoever starts first
        await anyio.to_thread.run_sync(RunStateStore(app.state.sync_redis).ensure_indexes)
        # the configured events stream, for what the API publishes (queued, cancelled) and reads
        app.state.bus = EventBus.from_settings(app.state.sync_redis, resolved.redis)
        app.state.async_bus = AsyncEventBus.from_settings(app.state.redis, resolved.redis)
        _log.info("api ready", extra={"event": "api.started"})
        try:
            yield
        finally:
            await app.state.live_reader.aclose()
            app.state.sync_redis.close()
            await app.state.redis.aclose()
            if embedded is not None:
                embedded.release()

    app = TrainerApi(title="Model Trainer API", version="0.1.0", lifespan=lifespan)
    app.state.settings = resolved
    app.state.data_root = resolved.data_root.resolve()
    # the last added runs first: a request has its id before it is refused for its key or
    # its size, and a body is read only from a caller with the key
    app.add_middleware(HeadAsGetMiddleware)  # innermost: nothing outside it sees the GET
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=resolved.security.max_request_bytes)
    if resolved.security.api_key is not None:
        app.add_middleware(
            ApiKeyMiddleware, api_key=resolved.security.api_key, open_paths=open_paths(app)
        )
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    app.include_router(health.router)
    for router in (
        runs.router,  # first: `GET /runs/{id}` is the most polled route, matched in order
        tokenizers.router,
        datasets.router,
        models.router,
        model_serving.router,
        logs.router,
        events.router,
        inference.router,
        artifacts.router,
        charts.router,
        studies.router,
        retraining.router,
    ):
        app.include_router(router)
    return app
