"""Publish -> consumer-callback latency through platform_core's bus, against raw redis-py
XADD -> XREAD on the same server with the same payload, interleaved message by message.

Usage: python bench/event_bus.py [--messages 2000]
Redis: REDIS_URL when set, else the project's embedded redis-server under a temp data root.
The last line printed is one JSON object with the figures issue 2 names.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import redis

from platform_core.event_bus import EventBus
from platform_core.events import Event, JobProgress, JobProgressPayload, encode_event
from platform_core.redis_connection import resolve_redis_url

RAW_STREAM = "bench:raw"
BUS_STREAM = "bench:bus"


class _Arrivals:
    """Receive times by message index, with a wake-up for the waiting publisher."""

    def __init__(self) -> None:
        self.times: dict[int, int] = {}
        self._cond = threading.Condition()

    def arrived(self, index: int) -> None:
        with self._cond:
            self.times[index] = time.perf_counter_ns()
            self._cond.notify_all()

    def wait(self, index: int) -> int:
        with self._cond:
            if not self._cond.wait_for(lambda: index in self.times, timeout=10):
                raise TimeoutError(f"message {index} never arrived")
            return self.times[index]


def _raw_consumer(url: str, arrivals: _Arrivals, stop: threading.Event) -> None:
    client = redis.Redis.from_url(url)
    last = "$"
    while not stop.is_set():
        response = client.xread({RAW_STREAM: last}, block=200, count=100)
        if not isinstance(response, list):
            continue
        for stream_entries in response:  # [stream name, [(id, {field: value}), ...]]
            for entry_id, fields in stream_entries[1]:
                last = entry_id
                arrivals.arrived(int(fields[b"i"]))
    client.close()


def _bus_consumer(url: str, arrivals: _Arrivals, stop: threading.Event) -> None:
    client = redis.Redis.from_url(url)
    bus = EventBus(client, stream=BUS_STREAM)

    def handler(event: Event) -> None:
        if isinstance(event, JobProgress):
            arrivals.arrived(event.payload.step)

    bus.run_consumer("bench", "c1", handler, should_stop=stop.is_set, block_ms=200)
    client.close()


def _event(i: int) -> JobProgress:
    payload = JobProgressPayload(step=i, total_steps=100_000, epoch=1.5, fraction=0.5, eta_s=30)
    return JobProgress(run_id="bench-run", user_id=123456789012345678, payload=payload)


def _time_raw(client: redis.Redis, arrivals: _Arrivals, event: Event, i: int) -> float:
    # the same bytes the bus carries, plus the index field the raw reader needs
    start = time.perf_counter_ns()
    client.xadd(RAW_STREAM, {"i": i, "data": encode_event(event)})
    return (arrivals.wait(i) - start) / 1_000


def _time_bus(bus: EventBus, arrivals: _Arrivals, event: Event, i: int) -> float:
    start = time.perf_counter_ns()
    bus.publish(event)
    return (arrivals.wait(i) - start) / 1_000


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run(url: str, messages: int, warmup: int) -> dict[str, float | str]:
    client = redis.Redis.from_url(url)
    client.delete(RAW_STREAM, BUS_STREAM)
    EventBus(client, stream=BUS_STREAM).ensure_group("bench", start_id="$")
    raw_arrivals, bus_arrivals, stop = _Arrivals(), _Arrivals(), threading.Event()
    threads = [
        threading.Thread(target=_raw_consumer, args=(url, raw_arrivals, stop)),
        threading.Thread(target=_bus_consumer, args=(url, bus_arrivals, stop)),
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # both consumers are blocked in XREAD / XREADGROUP
    bus = EventBus(client, stream=BUS_STREAM)
    raw_us: list[float] = []
    bus_us: list[float] = []
    for i in range(warmup + messages):
        event = _event(i)
        # Alternate which path goes first so neither always runs while the other's consumer
        # is still busy (the bus consumer acks after its callback).
        if i % 2:
            ours, raw = (
                _time_bus(bus, bus_arrivals, event, i),
                _time_raw(client, raw_arrivals, event, i),
            )
        else:
            raw, ours = (
                _time_raw(client, raw_arrivals, event, i),
                _time_bus(bus, bus_arrivals, event, i),
            )
        if i >= warmup:
            raw_us.append(raw)
            bus_us.append(ours)
    stop.set()
    for thread in threads:
        thread.join()
    client.close()
    p50, p99 = _percentile(bus_us, 50), _percentile(bus_us, 99)
    raw_p50, raw_p99 = _percentile(raw_us, 50), _percentile(raw_us, 99)
    return {
        "bench": "event_bus",
        "p50_ratio": round(p50 / raw_p50, 3),
        "p99_ratio": round(p99 / raw_p99, 3),
        "p50_us": round(p50, 1),
        "p99_us": round(p99, 1),
        "raw_p50_us": round(raw_p50, 1),
        "raw_p99_us": round(raw_p99, 1),
        "messages": messages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_root:
        url, embedded = resolve_redis_url(os.environ.get("REDIS_URL"), Path(data_root))
        try:
            result = run(url, args.messages, args.warmup)
        finally:
            if embedded is not None:
                embedded.release()
    print(
        f"bus p50 {result['p50_us']} us p99 {result['p99_us']} us; "
        f"raw p50 {result['raw_p50_us']} us p99 {result['raw_p99_us']} us"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
