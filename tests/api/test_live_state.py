"""A run's live state from Redis: many runs in one script call, and concurrent reads on the
event loop sent together, on a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from platform_core.errors import AppError, ErrorCode
from platform_core.run_state import RunStateStore, RunStatus, status_key
from trainer_api.live_state import LiveState, LiveStateReader, live_state, live_states

pytestmark = pytest.mark.integration


def _seed(client: redis.Redis, runs: int) -> list[str]:
    store = RunStateStore(client)
    ids = [f"live-{k}" for k in range(runs)]
    for k, run_id in enumerate(ids):
        store.set_status(run_id, RunStatus.RUNNING, message=f"step {k}")
        store.set_meta(run_id, kind="train_model", user_id=k, spec_json="{}")
    return ids


def _evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_evalsha")
    return int(stats["calls"]) if isinstance(stats, dict) else 0


def test_many_runs_in_one_call_in_order_and_unknown_ones_empty(redis_client: redis.Redis) -> None:
    ids = _seed(redis_client, 3)
    found = live_states(redis_client, [ids[2], "never-was", ids[0]])
    assert [state.message for state in found] == ["step 2", None, "step 0"]
    assert [state.status for state in found] == ["running", None, "running"]
    assert found[1] == LiveState(status=None, message=None, heartbeat=None, progress={}, meta={})
    assert found[2].kind == "train_model" and found[2].meta["user_id"] == "0"
    assert live_states(redis_client, []) == []
    assert live_state(redis_client, ids[1]).message == "step 1"


def test_concurrent_reads_share_round_trips_and_each_gets_its_own_run(
    redis_client: redis.Redis, redis_url: str
) -> None:
    ids = _seed(redis_client, 64)

    async def read_all() -> list[LiveState]:
        client = redis.asyncio.Redis.from_url(redis_url)
        reader = LiveStateReader(client)
        try:
            await reader.read(ids[0])  # loads the script, so the count below is of reads only
            before = _evalsha_calls(redis_client)
            found = await asyncio.gather(*(reader.read(run_id) for run_id in ids))
            assert _evalsha_calls(redis_client) - before == 1  # 64 reads, one round trip
            return found
        finally:
            await reader.aclose()
            await client.aclose()

    found = asyncio.run(read_all())
    assert [state.message for state in found] == [f"step {k}" for k in range(64)]
    assert [state.meta["user_id"] for state in found] == [str(k) for k in range(64)]


def test_a_read_that_arrives_during_a_batch_goes_in_the_next(
    redis_client: redis.Redis, redis_url: str
) -> None:
    ids = _seed(redis_client, 3)

    async def staggered() -> list[str | None]:
        client = redis.asyncio.Redis.from_url(redis_url)
        reader = LiveStateReader(client)
        try:
            first = asyncio.create_task(reader.read(ids[0]))
            await asyncio.sleep(0)  # the first batch is on its way
            await asyncio.sleep(0)
            later = [asyncio.create_task(reader.read(run_id)) for run_id in ids[1:]]
            return [state.message for state in await asyncio.gather(first, *later)]
        finally:
            await reader.aclose()
            await client.aclose()

    assert asyncio.run(staggered()) == ["step 0", "step 1", "step 2"]


def test_a_reader_that_left_does_not_stop_the_others(
    redis_client: redis.Redis, redis_url: str
) -> None:
    ids = _seed(redis_client, 3)

    async def one_leaves() -> list[str | None]:
        client = redis.asyncio.Redis.from_url(redis_url)
        reader = LiveStateReader(client)
        try:
            tasks = [asyncio.create_task(reader.read(run_id)) for run_id in ids]
            await asyncio.sleep(0)  # all three wait for the batch
            tasks[1].cancel()  # as when a client disconnects
            kept = await asyncio.gather(tasks[0], tasks[2])
            with pytest.raises(asyncio.CancelledError):
                await tasks[1]
            alone = asyncio.create_task(reader.read(ids[1]))
            await asyncio.sleep(0)
            alone.cancel()  # the only asker of a batch leaves: nothing is sent for it
            with pytest.raises(asyncio.CancelledError):
                await alone
            return [state.message for state in kept]
        finally:
            await reader.aclose()
            await client.aclose()

    assert asyncio.run(one_leaves()) == ["step 0", "step 2"]


def test_a_redis_failure_reaches_every_read_and_the_next_read_tries_again() -> None:
    async def unreachable() -> None:
        # nothing listens on port 1: connecting fails at once
        client = redis.asyncio.Redis(
            host="127.0.0.1", port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        reader = LiveStateReader(client)
        try:
            answers = await asyncio.gather(
                reader.read("a"), reader.read("b"), return_exceptions=True
            )
            assert all(isinstance(answer, RedisConnectionError) for answer in answers)
            with pytest.raises(RedisConnectionError):  # not left waiting on a dead sender
                await asyncio.wait_for(reader.read("c"), timeout=5)
        finally:
            await reader.aclose()
            await client.aclose()

    asyncio.run(unreachable())


def test_closing_fails_reads_in_flight_waiting_and_later(redis_url: str) -> None:
    async def close_midway() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        reader = LiveStateReader(client)
        try:
            in_flight = asyncio.create_task(reader.read("a"))
            await asyncio.sleep(0)
            await asyncio.sleep(0)  # the batch with "a" is on its way
            waiting = asyncio.create_task(reader.read("b"))
            await asyncio.sleep(0)
            await reader.aclose()
            for task in (in_flight, waiting):
                with pytest.raises(AppError) as failed:
                    await asyncio.wait_for(task, timeout=5)
                assert failed.value.code is ErrorCode.REDIS_UNAVAILABLE
            with pytest.raises(AppError):  # at once, not left waiting on a sender that is gone
                await asyncio.wait_for(reader.read("c"), timeout=5)
        finally:
            await client.aclose()

    asyncio.run(close_midway())


def test_closing_before_the_sender_ran_fails_the_waiting_reads(redis_url: str) -> None:
    async def close_at_once() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        reader = LiveStateReader(client)
        try:
            waiting = asyncio.create_task(reader.read("a"))
            await asyncio.sleep(0)  # "a" waits; the sender has not run yet
            await reader.aclose()
            with pytest.raises(AppError) as failed:
                await asyncio.wait_for(waiting, timeout=5)
            assert failed.value.code is ErrorCode.REDIS_UNAVAILABLE
        finally:
            await client.aclose()

    asyncio.run(close_at_once())


def test_an_outage_fails_the_reads_waiting_behind_the_batch_without_trying_again() -> None:
    """A Redis that accepts connections and never answers: the batch on its way times out, and
    the reads that queued behind it fail with it instead of each waiting out a timeout."""

    async def black_hole() -> tuple[list[BaseException | LiveState], int]:
        held: list[asyncio.StreamWriter] = []

        async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            held.append(writer)

        server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = redis.asyncio.Redis(
            host="127.0.0.1", port=port, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        reader = LiveStateReader(client)
        try:
            first = asyncio.create_task(reader.read("a"))
            await asyncio.sleep(0)
            await asyncio.sleep(0)  # "a" is on its way
            behind = [asyncio.create_task(reader.read(run_id)) for run_id in ("b", "c")]
            answers = await asyncio.gather(first, *behind, return_exceptions=True)
            return answers, len(held)
        finally:
            await reader.aclose()
            await client.aclose()
            for writer in held:
                writer.close()
            server.close()
            await server.wait_closed()

    answers, connections = asyncio.run(black_hole())
    assert all(isinstance(answer, RedisTimeoutError) for answer in answers)
    assert len({id(answer) for answer in answers}) == 3  # each its own copy
    assert connections == 1  # "b" and "c" never went to Redis themselves


def test_a_run_whose_keys_have_the_wrong_type_fails_alone(
    redis_client: redis.Redis, redis_url: str
) -> None:
    ids = _seed(redis_client, 2)
    redis_client.delete(status_key("broken"))
    redis_client.hset(status_key("broken"), "not", "a string")

    async def read_both() -> list[BaseException | LiveState]:
        client = redis.asyncio.Redis.from_url(redis_url)
        reader = LiveStateReader(client)
        try:
            reads = (reader.read(run_id) for run_id in (ids[0], "broken", ids[1]))
            return await asyncio.gather(*reads, return_exceptions=True)
        finally:
            await reader.aclose()
            await client.aclose()

    good, broken, other = asyncio.run(read_both())
    assert isinstance(good, LiveState) and good.message == "step 0"
    assert isinstance(other, LiveState) and other.message == "step 1"
    assert isinstance(broken, AppError) and broken.code is ErrorCode.INTERNAL
    with pytest.raises(AppError) as failed:
        live_states(redis_client, [ids[0], "broken"])
    assert "broken" in failed.value.message
