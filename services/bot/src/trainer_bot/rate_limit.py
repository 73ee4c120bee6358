"""A token bucket: the bot's own pace for one DM channel, so it stays under Discord's limit
instead of running into 429s."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """`capacity` messages at once, refilled at `refill_per_s`; `clock` is monotonic seconds."""

    def __init__(
        self,
        capacity: float,
        refill_per_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or refill_per_s <= 0:
            raise ValueError("a token bucket needs capacity >= 1 and refill_per_s > 0")
        self.capacity = capacity
        self.refill_per_s = refill_per_s
        self._clock = clock
        self._tokens = capacity
        self._updated = clock()
        self._blocked_until = self._updated

    def _refill(self) -> float:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.refill_per_s)
        self._updated = now
        return now

    def wait_s(self) -> float:
        """Seconds until a token can be taken (0 when one is there now)."""
        now = self._refill()
        if now < self._blocked_until:
            return self._blocked_until - now
        if self._tokens >= 1:
            return 0.0
        return (1 - self._tokens) / self.refill_per_s

    def try_take(self) -> bool:
        """Take a token if one is there now."""
        if self.wait_s() > 0:
            return False
        self._tokens -= 1
        return True

    def block_for(self, seconds: float) -> None:
        """Discord said wait (a 429's `retry_after`): no token before then, and the bucket
        restarts empty."""
        now = self._refill()
        self._tokens = 0.0
        self._blocked_until = max(self._blocked_until, now + seconds)
