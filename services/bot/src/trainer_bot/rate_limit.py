"""The bot's pace, matched to Discord's: at most `limit` messages (sends and edits together) in
any `window_s` seconds per DM channel (Discord: 5 per 5 s), and a global budget of requests
per second (Discord: 50; the bot stays under it).

A sliding-window log, not a token bucket: it keeps the times of the last `limit` sends, and a
send is allowed when the oldest of them is `window_s` old. That is exactly the rule Discord
enforces ("no 5-second window with more than 5"), where a bucket that refills continuously
lets a full burst through after every pause. A 429 empties the window until its
`retry_after` ends, and from then it refills from zero (one slot per `window_s / limit`).

Why not `aiolimiter`: its leaky bucket runs on the event loop's clock, cannot be told "empty
until T" by a 429, and has no state to save, so a restart would start full and burst. The
window's state here is `limit` timestamps on the wall clock, saved to Redis after each send
(`PacingStore`), so a restarted bot continues the window its previous life left.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

import redis.asyncio

DM_LIMIT = 5  # Discord's DM channel bucket: 5 messages ...
DM_WINDOW_S = 5.0  # ... per 5 seconds
GLOBAL_LIMIT = 45  # requests per second in all, under Discord's global 50
GLOBAL_WINDOW_S = 1.0
PACING_KEY = "bot:pacing:"


class SlidingWindow:
    """At most `limit` takes in any `window_s` seconds; `clock` is seconds (wall clock in
    production, so the saved times mean the same after a restart)."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        clock: Callable[[], float] = time.time,
        sent: Sequence[float] = (),
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("a window needs limit >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._times: list[float] = sorted(sent)[-limit:]  # the newest sends, oldest first

    @property
    def times(self) -> list[float]:
        """The send times the window remembers (what `PacingStore` saves)."""
        return list(self._times)

    def wait_s(self) -> float:
        """Seconds until a take is allowed (0 when it is now)."""
        if len(self._times) < self.limit:  # a 429 always fills the log, so no block either
            return 0.0
        return max(0.0, self._times[0] + self.window_s - self._clock())

    def take(self) -> None:
        """Record a send now (call only when `wait_s()` is 0)."""
        self._times = [*self._times, self._clock()][-self.limit :]

    def restamp_last(self) -> None:
        """The newest send was answered now: count it from now. Discord counted it somewhere
        between `take` and its answer; counting from the answer keeps the window true on
        Discord's side however long the request took."""
        if self._times:
            self._times[-1] = max(self._times[-1], self._clock())
            self._times.sort()

    def block_for(self, seconds: float) -> None:
        """Discord said wait (a 429's `retry_after`): nothing before then, and from then the
        window refills from zero, one slot every `window_s / limit` seconds."""
        until = self._clock() + seconds
        spacing = self.window_s / self.limit
        # as if `limit` sends had been made `spacing` apart, the oldest leaving the window
        # exactly at `until`: one slot frees then, the next `spacing` later, and so on
        synthetic = [until - self.window_s + k * spacing for k in range(self.limit)]
        self._times = sorted([*self._times, *synthetic])[-self.limit :]


class Pacer:
    """One DM channel's window and the global one; a send waits for both."""

    def __init__(
        self,
        *,
        limit: int = DM_LIMIT,
        window_s: float = DM_WINDOW_S,
        global_limit: int = GLOBAL_LIMIT,
        clock: Callable[[], float] = time.time,
        sent: Sequence[float] = (),
    ) -> None:
        self.channel = SlidingWindow(limit, window_s, clock=clock, sent=sent)
        self.global_window = SlidingWindow(global_limit, GLOBAL_WINDOW_S, clock=clock)

    def wait_s(self) -> float:
        return max(self.channel.wait_s(), self.global_window.wait_s())

    def take(self) -> None:
        """Reserve a send now (when `wait_s()` is 0)."""
        self.channel.take()
        self.global_window.take()

    def answered(self) -> None:
        """The reserved send was answered (not with a 429): count it from now."""
        self.channel.restamp_last()
        self.global_window.restamp_last()

    def block_for(self, seconds: float) -> None:
        self.channel.block_for(seconds)


class PacingStore:
    """The channel window's send times in Redis, so a restart does not burst."""

    def __init__(self, client: redis.asyncio.Redis, recipient: int) -> None:
        self._client = client
        self._key = f"{PACING_KEY}{recipient}"

    async def load(self) -> list[float]:
        raw = await self._client.get(self._key)
        if raw is None:
            return []
        loaded: object = json.loads(raw)
        if not isinstance(loaded, list):
            return []
        return [float(t) for t in loaded if isinstance(t, int | float)]

    async def save(self, times: Sequence[float], ttl_s: float) -> None:
        await self._client.set(self._key, json.dumps(list(times)), ex=max(1, round(ttl_s)))
