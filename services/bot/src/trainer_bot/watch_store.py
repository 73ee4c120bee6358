"""The runs whose events go to the owner's DM: a Redis set (`discord:watching`),
read once at start-up and kept in memory, so the notifier checks a watch without a round trip
for every event."""

from __future__ import annotations

import redis.asyncio

WATCHING_KEY = "discord:watching"


class WatchStore:
    """`client` must not decode responses (the project's Redis helpers never do)."""

    def __init__(self, client: redis.asyncio.Redis, key: str = WATCHING_KEY) -> None:
        self._client = client
        self._key = key
        self._watching: set[str] = set()

    async def restore(self) -> set[str]:
        """Load the watches saved by an earlier run of the bot."""
        members = await self._client.smembers(self._key)
        self._watching = {m.decode("utf-8") if isinstance(m, bytes) else str(m) for m in members}
        return set(self._watching)

    async def watch(self, run_id: str) -> bool:
        """Watch `run_id`; False when it already was."""
        self._watching.add(run_id)
        return bool(await self._client.sadd(self._key, run_id))

    async def unwatch(self, run_id: str) -> bool:
        """Stop watching `run_id`; False when it was not watched."""
        self._watching.discard(run_id)
        return bool(await self._client.srem(self._key, run_id))

    def is_watched(self, run_id: str) -> bool:
        return run_id in self._watching

    @property
    def watching(self) -> frozenset[str]:
        return frozenset(self._watching)
