"""Run bookkeeping against the number of runs ever made (issue 11's benchmark).

One Redis holds 100, 1,000, 10,000 and 100,000 runs, each size in a database of its own: a
steady set of active runs (30 running with fresh heartbeats, 6 of them with a cancellation
asked for within its grace period; 10 queued) and the rest finished (completed, failed,
cancelled), of five kinds, for 4 owners, newest last. The runs' keys are written as the store
wrote them before the indexes existed; the start-up migration (`RunStateStore.ensure_indexes`)
then builds the indexes, and is timed too. Each figure is the best of 5 repeats, each the
median of 10 calls, in ms, the sizes taking turns call by call:

- `GET /runs?limit=20` unfiltered, by status (running, a small set; completed, most runs: the
  worse of the two) and by owner (a quarter of the runs), through the in-process ASGI app
  (FastAPI's TestClient: the app, its lifespan, its middleware, no sockets);
- `GET /runs/{id}` of a finished run;
- the stale-run sweep (`requeue_stale_runs`) and the cancellation sweep
  (`sweep_cancellations`), each as a worker's maintenance thread calls it (nothing is due, as
  in almost every round).

Usage: python bench/scale.py [--sizes 100 1000 10000 100000] [--repeats 5] [--calls 10]
Redis: REDIS_URL when set, else the project's embedded redis-server under a temp data root.
Each size has its own database on that server (REDIS_URL's, then the next ones), so the sizes
are timed interleaved, call by call; the bench flushes those databases: scratch ones only.
The last line printed is one JSON object: each growth is the 100k figure / the 100 figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
from fastapi.testclient import TestClient

from platform_core.queue import requeue_stale_runs, sweep_cancellations
from platform_core.redis_connection import resolve_redis_url
from platform_core.run_state import RunStateStore
from platform_core.settings import load_settings
from trainer_api.main import create_app

RUNNING = 30  # active runs stay the same whatever the history: they are what a sweep reads
CANCELLING = 6  # of the running ones, a cancellation asked for within its grace period
QUEUED = 10
OWNERS = 4  # so that even at 100 runs an owner's page is full (20)
KINDS = ("train_model", "train_model", "train_tokenizer", "generate", "evaluate", "score")
FINISHED = ("completed",) * 7 + ("failed",) * 2 + ("cancelled",)
# far beyond the bench's own minutes, so no heartbeat or request seeded "now" comes due
SWEEP_AFTER_S = 3600.0
SEED_BATCH = 5000  # runs per pipeline
_FOREIGN_SETTINGS = ("APP__REDIS__URL", "APP__DATA_ROOT", "APP__SECURITY__API_KEY", "API_KEY")


def run_id(index: int) -> str:
    return f"run-{index:07d}"


def status_of(index: int, size: int) -> str:
    """The newest runs are the active ones; the rest finished in a fixed mix."""
    age = size - 1 - index
    if age < RUNNING:
        return "running"
    if age < RUNNING + QUEUED:
        return "queued"
    return FINISHED[index % len(FINISHED)]


def seed(client: redis.Redis, size: int, now: float) -> float:
    """Write `size` runs' keys as before the indexes, then build the indexes as a starting
    process does; returns the migration's seconds."""
    client.flushdb()
    for start in range(0, size, SEED_BATCH):
        pipe = client.pipeline(transaction=False)
        for index in range(start, min(size, start + SEED_BATCH)):
            rid, status = run_id(index), status_of(index, size)
            created = now - (size - index)  # one a second, the newest just now
            pipe.set(f"runs:status:{rid}", status)
            pipe.hset(
                f"runs:meta:{rid}",
                mapping={
                    "kind": KINDS[index % len(KINDS)],
                    "user_id": index % OWNERS,
                    "created_at": f"{created:.3f}",
                },
            )
            pipe.set(f"runs:spec:{rid}", "{}")
            pipe.zadd("runs:index", {rid: created})
            if status == "running":
                pipe.set(f"runs:hb:{rid}", f"{now:.3f}")
                if size - 1 - index < CANCELLING:
                    pipe.set(f"runs:{rid}:cancelled", f"{now:.3f}")
        pipe.execute()
    started = time.perf_counter()
    RunStateStore(client).ensure_indexes()
    return time.perf_counter() - started


def settle(client: redis.Redis) -> None:
    """Rewrite the append-only file now and wait for it: a rewrite that Redis starts by itself
    (the seeding grew the file) would fork and copy 100k runs in the middle of a figure."""

    def wait() -> None:
        flags = ("aof_rewrite_in_progress", "aof_rewrite_scheduled", "rdb_bgsave_in_progress")
        while any(client.info("persistence").get(flag) for flag in flags):
            time.sleep(0.05)

    wait()  # one Redis started by itself
    if client.info("persistence").get("aof_enabled"):
        client.bgrewriteaof()
        wait()


def interleaved_best_ms(
    figure: dict[int, Callable[[], object]], repeats: int, calls: int
) -> dict[int, float]:
    """Each size's best of `repeats`, each repeat the median of `calls` calls, in ms. The
    sizes take turns call by call, so a slow spell of the shared machine (they last a second
    or so) falls on every size alike; a median leaves out a call delayed on its own."""
    for _ in range(calls):  # untimed: the first requests of an app build what it caches
        for action in figure.values():
            action()
    best = dict.fromkeys(figure, float("inf"))
    for _ in range(repeats):
        times: dict[int, list[float]] = {size: [] for size in figure}
        for _ in range(calls):
            for size, action in figure.items():
                started = time.perf_counter()
                action()
                times[size].append(time.perf_counter() - started)
        for size, found in times.items():
            best[size] = min(best[size], statistics.median(found) * 1000)
    return best


def get(api: TestClient, path: str, expect_items: int | None = None) -> Callable[[], object]:
    def call() -> object:
        response = api.get(path)
        response.raise_for_status()
        if expect_items is not None and len(response.json()["items"]) != expect_items:
            raise RuntimeError(f"{path}: expected {expect_items} items, got {response.text}")
        return response

    return call


def actions(api: TestClient, client: redis.Redis, size: int) -> dict[str, Callable[[], object]]:
    """What is timed at one size, by figure name."""

    def stale() -> object:
        if found := requeue_stale_runs(client, stale_after_s=SWEEP_AFTER_S):
            raise RuntimeError(f"no run should be stale: {found}")
        return found

    def cancels() -> object:
        if found := sweep_cancellations(client, grace_s=SWEEP_AFTER_S):
            raise RuntimeError(f"no cancellation should be due: {found}")
        return found

    return {
        "list": get(api, "/runs?limit=20", 20),
        "list_status_running": get(api, "/runs?limit=20&status=running", 20),
        "list_status_completed": get(api, "/runs?limit=20&status=completed", 20),
        "list_owner": get(api, "/runs?limit=20&user_id=3", 20),
        "get": get(api, f"/runs/{run_id(size // 2)}"),
        "stale_sweep": stale,
        "cancel_sweep": cancels,
    }


def db_url(url: str, offset: int) -> str:
    """`url` moved `offset` databases on (one database a size, on one server)."""
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0) + offset
    return urlunsplit(parts._replace(path=f"/{db}"))


def run(url: str, data_root: Path, args: argparse.Namespace) -> dict[str, object]:
    for name in _FOREIGN_SETTINGS:
        os.environ.pop(name, None)
    os.environ["APP__DATA_ROOT"] = str(data_root)
    logging.disable(logging.WARNING)  # the API's request logs are not what is measured
    sizes: list[int] = args.sizes
    urls = {size: db_url(url, offset) for offset, size in enumerate(sizes)}
    clients = {size: redis.Redis.from_url(urls[size]) for size in sizes}
    for size in sizes:
        migration_s = seed(clients[size], size, time.time())
        print(f"{size:>7} runs seeded; indexes built by the migration in {migration_s:.2f} s")
    settle(clients[sizes[0]])
    best: dict[int, dict[str, float]] = {size: {} for size in sizes}
    with ExitStack() as stack:
        timed: dict[int, dict[str, Callable[[], object]]] = {}
        for size in sizes:  # an app a size; its start-up finds the indexes built
            os.environ["APP__REDIS__URL"] = urls[size]
            api = stack.enter_context(TestClient(create_app(load_settings())))
            timed[size] = actions(api, clients[size], size)
        for figure in timed[sizes[0]]:
            found = interleaved_best_ms(
                {size: timed[size][figure] for size in sizes}, args.repeats, args.calls
            )
            for size, ms in found.items():
                best[size][figure] = ms
    for size in sizes:
        if len(RunStateStore(clients[size]).cancel_requests()) != CANCELLING:
            raise RuntimeError("the pending cancellations were not built")
        clients[size].close()
        figures = " ".join(f"{name} {ms:.3f}" for name, ms in best[size].items())
        print(f"{size:>7} runs, ms: {figures}", flush=True)
    first, last = best[sizes[0]], best[sizes[-1]]

    def growth(*names: str) -> float:
        return round(max(last[name] / first[name] for name in names), 3)

    print(json.dumps({"sizes": sizes, "figures_ms": best}))
    return {
        "bench": "scale",
        "list_growth": growth("list"),
        "list_filtered_growth": growth(
            "list_status_running", "list_status_completed", "list_owner"
        ),
        "stale_sweep_growth": growth("stale_sweep"),
        "cancel_sweep_growth": growth("cancel_sweep"),
        "get_growth": growth("get"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10, help="calls per timed repeat")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as scratch:
        data_root = Path(scratch)
        url, embedded = resolve_redis_url(os.environ.get("REDIS_URL"), data_root)
        try:
            result = run(url, data_root, args)
        finally:
            if embedded is not None:
                embedded.release()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
