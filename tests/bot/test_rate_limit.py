"""The pacer on a fake clock: Discord's 5 per 5 s per DM channel, across 429s and restarts."""

from __future__ import annotations

import asyncio

import pytest
import redis

from platform_core.redis_connection import connect_async
from tests.bot.helpers import max_in_window
from trainer_bot.rate_limit import Pacer, PacingStore, SlidingWindow

OWNER = 4_242


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def send_when_allowed(pacer: Pacer, clock: Clock, sent: list[float]) -> None:
    """What the notifier does: wait until the pacer allows, then send."""
    clock.now += pacer.wait_s()
    assert pacer.wait_s() == 0
    pacer.take()
    sent.append(clock.now)


def test_a_window_allows_five_then_one_as_each_send_leaves_it() -> None:
    clock = Clock()
    window = SlidingWindow(5, 5.0, clock=clock)
    for _ in range(5):
        assert window.wait_s() == 0
        window.take()
    assert window.wait_s() == pytest.approx(5.0)
    clock.now += 5.0
    assert window.wait_s() == 0


def test_a_send_counts_from_its_answer_so_a_slow_request_never_crowds_the_next_window() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    for _ in range(5):
        pacer.take()
    clock.now += 0.8  # the last request took 0.8 s to be answered
    pacer.answered()
    # the first four leave the window 5 s after they were sent, the fifth 5 s after its answer
    clock.now = 1_000_005.0
    for _ in range(4):
        assert pacer.wait_s() == 0
        pacer.take()
        pacer.answered()
    assert pacer.wait_s() == pytest.approx(0.8)


def test_a_long_pause_never_allows_more_than_five_in_a_burst() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    sent: list[float] = []
    for _ in range(3):
        for _ in range(12):
            send_when_allowed(pacer, clock, sent)
        clock.now += 3_600  # an idle hour: a token bucket would be full again
    assert max_in_window(sent, 5.0) == 5


def test_a_429_empties_the_window_until_retry_after_then_it_refills_from_zero() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.block_for(2.5)
    assert pacer.wait_s() == pytest.approx(2.5)
    clock.now += 2.5
    sent: list[float] = []
    for _ in range(5):
        send_when_allowed(pacer, clock, sent)
    # one at the end of the wait, then one per second: no burst of five
    assert [t - sent[0] for t in sent] == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])


def test_a_shorter_block_does_not_shorten_a_longer_one() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.block_for(10)
    pacer.block_for(1)
    assert pacer.wait_s() == pytest.approx(10)


def test_the_global_budget_holds_below_fifty_a_second() -> None:
    clock = Clock()
    pacer = Pacer(limit=1_000, window_s=1.0, clock=clock)  # a wide channel: global decides
    sent: list[float] = []
    for _ in range(200):
        send_when_allowed(pacer, clock, sent)
    assert max_in_window(sent, 1.0) < 50


def test_no_five_second_window_holds_more_than_five_across_a_429_and_a_restart(
    redis_url: str, redis_client: redis.Redis
) -> None:
    clock = Clock()
    sent: list[float] = []

    async def scenario() -> None:
        client = await connect_async(redis_url)
        store = PacingStore(client, OWNER)
        pacer = Pacer(clock=clock, sent=await store.load())
        for _ in range(7):
            send_when_allowed(pacer, clock, sent)
        pacer.take()  # the 8th attempt was answered 429
        sent.append(clock.now)  # counted as if it had gone through: the strictest reading
        pacer.block_for(0.3)
        for _ in range(6):
            send_when_allowed(pacer, clock, sent)
        await store.save(pacer.channel.times, ttl_s=60)
        # the bot restarts at once: the new pacer continues the old one's window
        restarted = Pacer(clock=clock, sent=await store.load())
        for _ in range(8):
            send_when_allowed(restarted, clock, sent)
        await client.aclose()

    asyncio.run(scenario())
    assert len(sent) == 22
    assert max_in_window(sent, 5.0) <= 5
    assert redis_client.ttl(b"bot:pacing:4242") > 0


def test_a_restart_without_saved_times_would_burst() -> None:
    """The control: what the saved times prevent."""
    clock = Clock()
    sent: list[float] = []
    pacer = Pacer(clock=clock)
    for _ in range(5):
        send_when_allowed(pacer, clock, sent)
    forgetful = Pacer(clock=clock)
    for _ in range(5):
        send_when_allowed(forgetful, clock, sent)
    assert max_in_window(sent, 5.0) == 10


@pytest.mark.parametrize(("limit", "window_s"), [(0, 1.0), (1, 0.0)])
def test_a_window_refuses_nonsense(limit: int, window_s: float) -> None:
    with pytest.raises(ValueError, match="limit"):
        SlidingWindow(limit, window_s)
