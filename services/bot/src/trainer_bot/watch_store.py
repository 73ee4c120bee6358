"""The runs whose events go to the owner's DM: a Redis set (`discord:watching`),
read once at start-up and kept in memory, so the notifier checks a watch without a round trip
for every event.

A watch that `/watch` started with a catch-up also keeps where it starts (`discord:watching:
after`, run -> stream id): the run's entries up to that id were shown by the catch-up, so the
notifier passes over them instead of repeating them.
"""

from __future__ import annotations

import redis.asyncio

WATCHING_KEY = "discord:watching"


def stream_position(entry_id: str) -> tuple[int, int]:
    """A stream id ("<ms>-<seq>") as a pair that orders like the stream."""
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


class WatchStore:
    """`client` must not decode responses (the project's Redis helpers never do)."""

    def __init__(self, client: redis.asyncio.Redis, key: str = WATCHING_KEY) -> None:
        self._client = client
        self._key = key
        self._after_key = f"{key}:after"
        self._watching: set[str] = set()
        self._after: dict[str, tuple[int, int]] = {}

    async def restore(self) -> set[str]:
        """Load the watches saved by an earlier run of the bot."""
        members = await self._client.smembers(self._key)
        self._watching = {_text(m) for m in members}
        starts = await self._client.hgetall(self._after_key)
        self._after = {_text(run): stream_position(_text(at)) for run, at in starts.items()}
        return set(self._watching)

    async def watch(self, run_id: str, *, after: str | None = None) -> bool:
        """Watch `run_id`, from the entry after stream id `after` when given (a watch that
        already exists keeps its start); False when it already was watched."""
        added = bool(await self._client.sadd(self._key, run_id))
        if added and after is not None:
            self._after[run_id] = stream_position(after)
            await self._client.hset(self._after_key, run_id, after)
        self._watching.add(run_id)
        return added

    async def unwatch(self, run_id: str) -> bool:
        """Stop watching `run_id`; False when it was not watched."""
        self._watching.discard(run_id)
        self._after.pop(run_id, None)
        await self._client.hdel(self._after_key, run_id)
        return bool(await self._client.srem(self._key, run_id))

    def is_watched(self, run_id: str, entry_id: str | None = None) -> bool:
        """Whether `run_id` is watched (at stream entry `entry_id`: after its watch's start)."""
        if run_id not in self._watching:
            return False
        start = self._after.get(run_id)
        return start is None or entry_id is None or stream_position(entry_id) > start

    @property
    def watching(self) -> frozenset[str]:
        return frozenset(self._watching)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
