"""The REST API against raw RQ and against a trivial endpoint of the same server (issue 5's
benchmark). Everything runs as it does in production: `python -m trainer_api` (uvicorn, JSON
logs at INFO) and `trainctl worker` (RQ's forking `Worker`, scheduler and maintenance thread)
as subprocesses on one Redis.

(a) dispatch: `POST /runs/train` sent with the project's `TrainerClient` (validation,
    `Idempotency-Key`, id claim, `enqueue_job`, the queued event, the 202) -> RQ dequeue and
    fork -> `trainer_worker.jobs.train_model` -> `run_job` (running status, started event,
    heartbeat thread) -> the job's body starts, against raw `Queue.enqueue` of a function that
    only notes its start, same arguments, same queue, same worker. The body of the real job is
    replaced by one that notes its start (training itself is not dispatch). Both notes are
    `time.monotonic_ns()` (CLOCK_MONOTONIC, shared by every process on the host) pushed to
    Redis; the two paths alternate which goes first, one job at a time, each sent once the
    worker is idle again.
(b) status: `GET /runs/{id}` of finished runs (their Redis keys + manifests on disk), each
    client polling a run of its own, against `GET /healthz` (an `async def` that touches
    nothing) on the same server, requests/s with 32 concurrent keep-alive HTTP/1.1
    connections from a lean asyncio client (so the client takes little of the two cores from
    the server); phases alternate; ratio of the medians.
    The API process's CPU time per request is reported too: the load of other processes
    changes it much less than requests/s.
(c) the API process's VmRSS once `/readyz` answers, and the import time of
    `trainer_api.__main__` (uvicorn + the app) in a fresh interpreter, median of several.

Usage: python bench/api.py [--samples 200] [--clients 32] [--phase-s 3] [--rounds 5]
Redis: REDIS_URL when set, else the project's embedded redis-server under a temp data root.
A REDIS_URL must be a scratch Redis that no other worker serves: the bench queues jobs on the
`training` queue and leaves its runs in the run index.
The last line printed is one JSON object with the figures issue 5 names.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import redis
from rq import Queue, Worker, get_current_job

from platform_core.api_models import RunCreate
from platform_core.http_client import TrainerClient
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.manifests import EvalPoint, MetricsSummary, RunDurations, RunManifest
from platform_core.manifests import write_manifest as write_run_manifest
from platform_core.queue import FAILURE_TTL_S, RESULT_TTL_S, TRAINING_QUEUE
from platform_core.redis_connection import resolve_redis_url
from platform_core.run_state import RunStatus
from platform_core.specs import ModelSpec, TrainRunSpec

if TYPE_CHECKING:
    from trainer_worker.job_context import JobContext, Outcome

STARTED_KEY = "bench:api:started:"  # + job id: the job's start, monotonic ns
TOKENIZER_ID = "bench-tok"
# by name: the worker runs this file as its __main__ (RQ refuses a __main__ function object)
RAW_JOB = "__main__.raw_job"
APP_MODULE = "trainer_api.__main__"  # what `python -m trainer_api` imports before serving
# settings the children must not inherit: they would point them elsewhere or lock them out
_FOREIGN_SETTINGS = ("APP__REDIS__URL", "APP__DATA_ROOT", "APP__SECURITY__API_KEY", "API_KEY")


# ---- the worker side (runs in the worker subprocess and its work horses) ---------------------


def note_start(client: redis.Redis, job_id: str, started_ns: int) -> None:
    key = STARTED_KEY + job_id
    client.rpush(key, started_ns)
    client.expire(key, 600)


def raw_job(run_id: str, spec: JsonObject, *, user_id: int | None = None) -> str:
    """The baseline's job function: notes when it starts and returns."""
    started = time.monotonic_ns()
    job = get_current_job()
    if job is None:
        raise RuntimeError("raw_job runs inside an RQ worker")
    note_start(job.connection, job.id, started)
    return run_id


def note_body_start(spec_json: JsonObject, context: JobContext) -> Outcome:
    """Stands in for `train_model_body` inside the real job: notes when the body starts."""
    started = time.monotonic_ns()
    note_start(context.store.client, context.run_id, started)
    return Outcome(result={}, message="noted")


def serve_worker(name: str) -> int:
    """`trainctl worker` on the training queue, with the model run's body replaced. Replacing
    it imports the job module before the worker forks, so every work horse inherits it;
    `trainctl worker` alone does not, and each of its work horses imports it (torch,
    transformers: seconds) before the job starts. Both paths here run on the warm one."""
    # only this process loads torch (through the worker's modules), not the bench itself
    from trainer_cli.main import main as trainctl  # noqa: PLC0415
    from trainer_worker import jobs  # noqa: PLC0415

    # train_model calls the module's name at run time; it is imported there, not exported
    vars(jobs)["train_model_body"] = note_body_start
    return trainctl(["worker", "--queues", TRAINING_QUEUE, "--name", name])


# ---- the stack: API and worker subprocesses --------------------------------------------------


@dataclass(frozen=True)
class Stack:
    base_url: str
    host: str
    port: int
    api_pid: int
    worker_key: str  # the worker's RQ hash, whose `state` says busy / idle
    data_root: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(url: str, data_root: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_SETTINGS}
    env.update(
        REDIS_URL=url,
        DATA_ROOT=str(data_root),
        APP__API__HOST="127.0.0.1",
        APP__API__PORT=str(port),
        APP__ENVIRONMENT="production",  # JSON logs, as deployed
    )
    return env


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-20:])


def _wait(
    what: str, ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path
) -> None:
    """Poll `ready` for up to 180 s (the worker imports torch on a busy machine)."""
    deadline = time.monotonic() + 180
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the {what} did not start; its log ends:\n{_tail(log)}")
        time.sleep(0.05)


def _api_ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # uvicorn and RQ both shut down warm on it
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_stack(url: str, client: redis.Redis, data_root: Path) -> Iterator[Stack]:
    port = _free_port()
    env = child_env(url, data_root, port)
    worker_name = f"bench-api-{os.getpid()}"
    worker_key = Worker.redis_worker_namespace_prefix + worker_name
    api_log, worker_log = data_root / "api.log", data_root / "worker.log"
    with api_log.open("wb") as api_out, worker_log.open("wb") as worker_out:
        worker = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-worker", worker_name],
            env=env,
            cwd=data_root,  # no stray .env file from the caller's folder
            stdout=worker_out,
            stderr=subprocess.STDOUT,
        )
        api = subprocess.Popen(
            [sys.executable, "-m", "trainer_api"],
            env=env,
            cwd=data_root,
            stdout=api_out,
            stderr=subprocess.STDOUT,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            _wait("API", lambda: _api_ready(base_url), api, api_log)
            _wait("worker", lambda: worker_idle(client, worker_key), worker, worker_log)
            yield Stack(base_url, "127.0.0.1", port, api.pid, worker_key, data_root)
        finally:
            _stop(api)
            _stop(worker)


def worker_idle(client: redis.Redis, worker_key: str) -> bool:
    return client.hget(worker_key, "state") == b"idle"


def rss_mb(pid: int) -> float:
    """VmRSS of `pid` in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 10**6
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ---- (a) dispatch latency --------------------------------------------------------------------


def bench_spec() -> TrainRunSpec:
    return TrainRunSpec(
        model=ModelSpec(family="char_lstm", preset="tiny"), tokenizer_id=TOKENIZER_ID
    )


def make_tokenizer(data_root: Path) -> None:
    """What `check_tokenizer` looks for: a trained tokenizer's manifest (never loaded here)."""
    path = DataLayout(data_root).tokenizer_manifest(TOKENIZER_ID)
    path.parent.mkdir(parents=True)
    path.write_text("{}", encoding="utf-8")


def _started_after(client: redis.Redis, stack: Stack, job_id: str, sent_ns: int) -> float:
    """Milliseconds from `sent_ns` to the job's noted start; returns once the worker is idle."""
    answer = client.blpop([STARTED_KEY + job_id], timeout=60)
    if not isinstance(answer, list | tuple):
        raise TimeoutError(f"job {job_id} never started; see {stack.data_root / 'worker.log'}")
    deadline = time.monotonic() + 60
    while not worker_idle(client, stack.worker_key):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker stayed busy after {job_id}")
        time.sleep(0.002)
    time.sleep(0.005)  # the worker's heartbeat before it blocks on the queue again
    return (int(answer[1]) - sent_ns) / 10**6


def dispatch_ours(api: TrainerClient, client: redis.Redis, stack: Stack, run_id: str) -> float:
    body = RunCreate(spec=bench_spec(), run_id=run_id)
    key = uuid.uuid4().hex
    sent = time.monotonic_ns()
    api.train_model(body, idempotency_key=key)
    return _started_after(client, stack, run_id, sent)


def dispatch_raw(queue: Queue, client: redis.Redis, stack: Stack, job_id: str) -> float:
    spec: JsonObject = json.loads(bench_spec().model_dump_json())  # as the API sends it
    sent = time.monotonic_ns()
    queue.enqueue(
        RAW_JOB,
        args=(job_id, spec),
        kwargs={"user_id": None},
        job_id=job_id,
        job_timeout=-1,
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        description=f"raw {job_id}",
    )
    return _started_after(client, stack, job_id, sent)


def measure_dispatch(
    client: redis.Redis, stack: Stack, samples: int, warmup: int, prefix: str
) -> tuple[list[float], list[float]]:
    """Returns our and the raw milliseconds, alternating which goes first."""
    queue = Queue(TRAINING_QUEUE, connection=client)
    ours_ms: list[float] = []
    raw_ms: list[float] = []
    with TrainerClient(stack.base_url, backoff_s=0.0) as api:
        for i in range(warmup + samples):
            run_id, job_id = f"{prefix}-run-{i}", f"{prefix}-raw-{i}"
            if i % 2:
                ours = dispatch_ours(api, client, stack, run_id)
                raw = dispatch_raw(queue, client, stack, job_id)
            else:
                raw = dispatch_raw(queue, client, stack, job_id)
                ours = dispatch_ours(api, client, stack, run_id)
            if i >= warmup:
                ours_ms.append(ours)
                raw_ms.append(raw)
    return ours_ms, raw_ms


# ---- (b) status requests/s -------------------------------------------------------------------


def write_manifest(data_root: Path, run_id: str) -> None:
    """A finished run's manifest of the usual size (GET /runs/{id} reads it)."""
    history = [
        EvalPoint(step=100 * (k + 1), eval_loss=3.0 - 0.1 * k, perplexity=20.0 - k)
        for k in range(20)
    ]
    manifest = RunManifest(
        run_id=run_id,
        kind="train_model",
        status=RunStatus.COMPLETED,
        stop_reason="max_steps",
        spec=json.loads(bench_spec().model_dump_json()),
        started_at=datetime.now(UTC),
        metrics=MetricsSummary(
            steps=2000,
            final_loss=1.2,
            best_eval_loss=1.1,
            first_perplexity=20.0,
            final_perplexity=3.1,
            tokens_per_s=15000.0,
            eval_history=history,
        ),
        durations_s=RunDurations(total=120.0, training=110.0),
        library_versions={"torch": "2.13.0", "tokenizers": "0.22"},
    )
    layout = DataLayout(data_root)
    layout.run_dir(run_id).mkdir(parents=True, exist_ok=True)
    write_run_manifest(layout.run_manifest(run_id), manifest)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            return int(value)
    raise RuntimeError(f"no content-length in {head!r}")


async def _one_client(
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes, until: float
) -> int:
    reader, writer = streams
    done = 0
    while time.monotonic() < until:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer {head[:40]!r}")
        await reader.readexactly(_content_length(head))
        done += 1
    return done


async def _requests(
    stack: Stack, paths: list[str], clients: int, seconds: float
) -> tuple[int, float]:
    """`clients` keep-alive connections, client k sending `GET paths[k % len(paths)]` one
    after the other for `seconds`; returns the requests answered and the seconds it took."""
    host = f"Host: {stack.host}:{stack.port}"
    requests = [f"GET {path} HTTP/1.1\r\n{host}\r\n\r\n".encode() for path in paths]
    connections = await asyncio.gather(
        *(asyncio.open_connection(stack.host, stack.port) for _ in range(clients))
    )
    start = time.monotonic()
    counts = await asyncio.gather(
        *(
            _one_client(streams, requests[k % len(requests)], start + seconds)
            for k, streams in enumerate(connections)
        )
    )
    elapsed = time.monotonic() - start
    for _, writer in connections:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for _, writer in connections))
    return sum(counts), elapsed


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid`, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@dataclass(frozen=True)
class Phase:
    rps: float  # requests answered per second
    cpu_us: float  # the API process's CPU time per request: what the load changes least


def phase(stack: Stack, paths: list[str], clients: int, seconds: float) -> Phase:
    cpu_before = cpu_s(stack.api_pid)
    count, elapsed = asyncio.run(_requests(stack, paths, clients, seconds))
    return Phase(count / elapsed, (cpu_s(stack.api_pid) - cpu_before) / count * 10**6)


def measure_status(
    stack: Stack, run_ids: list[str], clients: int, phase_s: float, rounds: int
) -> dict[str, list[Phase]]:
    """Each endpoint's phases, alternating which goes first round by round; each client polls
    its own run (as watchers of different runs do), the trivial endpoint is one path."""
    paths = {"run": [f"/runs/{run_id}" for run_id in run_ids], "trivial": ["/healthz"]}
    phases: dict[str, list[Phase]] = defaultdict(list)
    for path in paths.values():  # warm-up: the threadpool, the page cache, uvicorn's buffers
        phase(stack, path, clients, 1.0)
    for round_index in range(rounds):
        order = ("run", "trivial") if round_index % 2 else ("trivial", "run")
        for name in order:
            phases[name].append(phase(stack, paths[name], clients, phase_s))
    return phases


# ---- (c) import time -------------------------------------------------------------------------


def measure_import(module: str, repeats: int, cwd: Path) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds to import `module` in a fresh interpreter (its start not counted).
    CPU time is what the import costs on an idle machine; wall time grows with the load."""
    code = (
        "import time; w, c = time.perf_counter(), time.process_time(); "
        f"import {module}; print(time.perf_counter() - w, time.process_time() - c)"
    )
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd
        ).stdout.split()
        wall.append(float(out[0]))
        cpu.append(float(out[1]))
    return wall, cpu


def import_offenders(module: str, cwd: Path, top: int = 6) -> list[tuple[str, float]]:
    """`-X importtime`'s self times summed by top-level package, largest first, in seconds."""
    stderr = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
    ).stderr
    totals: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():  # self µs | cumulative µs | name
            totals[parts[2].strip().split(".")[0]] += int(parts[0]) / 10**6
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)
    return [(name, round(seconds, 3)) for name, seconds in ranked[:top]]


# ---- the run ---------------------------------------------------------------------------------


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def run(url: str, data_root: Path, args: argparse.Namespace) -> dict[str, object]:
    client = redis.Redis.from_url(url)
    if Worker.count(queue=Queue(TRAINING_QUEUE, connection=client)):
        raise SystemExit("api bench: another worker serves the training queue of this Redis")
    import_s, import_cpu_s = measure_import(APP_MODULE, args.import_repeats, data_root)
    offenders = import_offenders(APP_MODULE, data_root)
    make_tokenizer(data_root)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    with running_stack(url, client, data_root) as stack:
        startup_rss = rss_mb(stack.api_pid)
        ours_ms, raw_ms = measure_dispatch(client, stack, args.samples, args.warmup, prefix)
        # finished runs of the dispatch phase, one per status client
        run_ids = [f"{prefix}-run-{i % (args.warmup + args.samples)}" for i in range(args.clients)]
        for run_id in set(run_ids):
            write_manifest(data_root, run_id)
        phases = measure_status(stack, run_ids, args.clients, args.phase_s, args.rounds)
        loaded_rss = rss_mb(stack.api_pid)
    client.close()
    med = statistics.median
    p50, raw_p50 = med(ours_ms), med(raw_ms)
    p99, raw_p99 = _p99(ours_ms), _p99(raw_ms)
    rps = {name: [p.rps for p in found] for name, found in phases.items()}
    cpu_us = {name: med(p.cpu_us for p in found) for name, found in phases.items()}
    run_rps, trivial_rps = med(rps["run"]), med(rps["trivial"])
    print(
        f"dispatch: POST /runs/train -> body p50 {p50:.2f} ms p99 {p99:.2f} ms; raw enqueue -> "
        f"start p50 {raw_p50:.2f} ms p99 {raw_p99:.2f} ms ({args.samples} each)"
    )
    print(
        f"status: GET /runs/{{id}} {[round(r) for r in rps['run']]} req/s, GET /healthz "
        f"{[round(r) for r in rps['trivial']]} req/s ({args.clients} clients); API CPU per "
        f"request {cpu_us['run']:.0f} us vs {cpu_us['trivial']:.0f} us"
    )
    print(
        f"api process: VmRSS {startup_rss:.1f} MB after start-up, {loaded_rss:.1f} MB after the "
        f"load; import {APP_MODULE} {[round(s, 3) for s in import_s]} s (CPU "
        f"{[round(s, 3) for s in import_cpu_s]} s); -X importtime self "
        f"time by package: {offenders}"
    )
    return {
        "bench": "api",
        "dispatch_p50_ratio": round(p50 / raw_p50, 3),
        "status_rps_ratio": round(run_rps / trivial_rps, 3),
        "rss_mb": round(startup_rss, 1),
        "import_s": round(med(import_s), 3),
        "import_cpu_s": round(med(import_cpu_s), 3),
        "dispatch_p99_ratio": round(p99 / raw_p99, 3),
        "dispatch_p50_ms": round(p50, 2),
        "dispatch_p99_ms": round(p99, 2),
        "raw_p50_ms": round(raw_p50, 2),
        "raw_p99_ms": round(raw_p99, 2),
        "status_rps": round(run_rps),
        "trivial_rps": round(trivial_rps),
        "status_cpu_us": round(cpu_us["run"]),
        "trivial_cpu_us": round(cpu_us["trivial"]),
        "rss_after_load_mb": round(loaded_rss, 1),
        "samples": args.samples,
        "clients": args.clients,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="dispatches per path")
    parser.add_argument("--warmup", type=int, default=20, help="untimed dispatches per path")
    parser.add_argument("--clients", type=int, default=32, help="concurrent status clients")
    parser.add_argument("--phase-s", type=float, default=3.0, help="seconds per status phase")
    parser.add_argument("--rounds", type=int, default=5, help="status phases per endpoint")
    parser.add_argument("--import-repeats", type=int, default=5)
    parser.add_argument("--serve-worker", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_worker:
        sys.exit(serve_worker(args.serve_worker))
    with tempfile.TemporaryDirectory(prefix="api-bench-") as scratch:
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
