from __future__ import annotations

import pytest

from trainer_bot.rate_limit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_allows_a_burst_then_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(3, 2.0, clock=clock)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.try_take()
    assert not bucket.try_take()


def test_refill_never_exceeds_capacity() -> None:
    clock = Clock()
    bucket = TokenBucket(2, 1.0, clock=clock)
    clock.now += 1_000
    assert [bucket.try_take() for _ in range(3)] == [True, True, False]


def test_block_for_honours_retry_after_then_restarts_empty() -> None:
    clock = Clock()
    bucket = TokenBucket(5, 1.0, clock=clock)
    bucket.block_for(2.5)
    assert bucket.wait_s() == pytest.approx(2.5)
    assert not bucket.try_take()
    clock.now += 2.5
    # the bucket refilled from empty while blocked: 2.5 tokens, not the full 5
    assert [bucket.try_take() for _ in range(3)] == [True, True, False]


def test_a_shorter_block_does_not_shorten_a_longer_one() -> None:
    clock = Clock()
    bucket = TokenBucket(1, 1.0, clock=clock)
    bucket.block_for(10)
    bucket.block_for(1)
    assert bucket.wait_s() == pytest.approx(10)


@pytest.mark.parametrize(("capacity", "rate"), [(0, 1.0), (1, 0.0)])
def test_bucket_refuses_nonsense(capacity: float, rate: float) -> None:
    with pytest.raises(ValueError, match="capacity"):
        TokenBucket(capacity, rate)
