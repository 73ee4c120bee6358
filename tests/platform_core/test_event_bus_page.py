"""AsyncEventBus.read_page: a follower's cursor moves past entries it cannot decode, so it
never reads them again (the API's SSE stream would otherwise spin on one)."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio

from platform_core.event_bus import AsyncEventBus, Page
from platform_core.events import JobProgress, JobProgressPayload

pytestmark = pytest.mark.integration


def _progress(step: int) -> JobProgress:
    payload = JobProgressPayload(step=step, total_steps=10, epoch=0.0, fraction=step / 10)
    return JobProgress(run_id="run-p", payload=payload)


def _steps(page: Page) -> list[int]:
    return [d.event.payload.step for d in page.deliveries if isinstance(d.event, JobProgress)]


def test_the_next_id_passes_undecodable_entries(redis_url: str, redis_client: redis.Redis) -> None:
    async def scenario() -> tuple[Page, Page, Page, str, str]:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            bus = AsyncEventBus(client, stream="page:events")
            await bus.publish(_progress(1))
            added = await client.xadd(bus.stream, {"data": b"not an event"})
            junk = added.decode() if isinstance(added, bytes) else added
            page = await bus.read_page("0-0")
            idle = await bus.read_page(page.next_id, block_ms=10)
            last = await bus.publish(_progress(2))
            fresh = await bus.read_page(idle.next_id, block_ms=10)
            return page, idle, fresh, junk, last
        finally:
            await client.aclose()

    page, idle, fresh, junk, last = asyncio.run(scenario())
    assert (_steps(page), page.next_id) == ([1], junk)
    assert (idle.deliveries, idle.next_id) == ([], junk)  # nothing new: the cursor stays
    assert (_steps(fresh), fresh.next_id) == ([2], last)
