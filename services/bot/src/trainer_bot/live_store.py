"""Each watched run's live status message: its Discord message id and the figures it shows, in
a Redis hash (`discord:live`, field = run id), saved after every send or edit. A restarted bot
edits the same message instead of posting a new one; a finished run's entry is removed."""

from __future__ import annotations

import json

import redis.asyncio

from trainer_bot.run_tracker import RunSnapshot

LIVE_KEY = "discord:live"


class LiveStore:
    def __init__(self, client: redis.asyncio.Redis, key: str = LIVE_KEY) -> None:
        self._client = client
        self._key = key

    async def load(self) -> dict[str, tuple[int, RunSnapshot]]:
        """Run id -> (message id, snapshot) of every live message a previous start left."""
        saved = await self._client.hgetall(self._key)
        live: dict[str, tuple[int, RunSnapshot]] = {}
        for field, raw in saved.items():
            run_id = field.decode() if isinstance(field, bytes) else str(field)
            try:
                entry = json.loads(raw)
                live[run_id] = (int(entry["message_id"]), RunSnapshot.from_json(entry["snapshot"]))
            except (ValueError, KeyError, TypeError):
                continue  # an entry this version cannot read: the run gets a new message
        return live

    async def save(self, message_id: int, snapshot: RunSnapshot) -> None:
        entry = {"message_id": message_id, "snapshot": snapshot.to_json()}
        await self._client.hset(self._key, snapshot.run_id, json.dumps(entry))

    async def forget(self, run_id: str) -> None:
        await self._client.hdel(self._key, run_id)
