"""Train a BPE tokenizer and a tiny GPT-2 on the built-in corpus through the API, live.

This is the README's main job: it starts the API (`python -m trainer_api`) on a free local
port and a worker process, both on the same Redis (the embedded one when none is configured),
submits the two runs with the project's HTTP client, follows each one's event stream (SSE)
with a progress bar, and prints the first and final eval perplexity and a sample. The API and
the worker are stopped at the end, after an error, and on Ctrl-C (which first cancels the run
under way, so it stops at its next step and keeps a checkpoint).

It runs the API and the worker from this environment: without the API package, or without
the worker package (unless `--no-worker`), it says which to install and exits before
starting anything.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from platform_core.api_models import JobAccepted, RunCreate, RunMetrics, TokenizerCreate
from platform_core.errors import AppError, ErrorCode, ExitCode, invalid_input
from platform_core.http_client import ApiError, TrainerClient
from platform_core.redis_connection import open_redis
from platform_core.settings import Settings
from platform_core.specs import ModelSpec, TokenizerSpec, TrainConfig, TrainRunSpec
from trainer_cli import worker_commands
from trainer_cli.follow import follow_run
from trainer_cli.progress import ProgressView, format_number

READY_TIMEOUT_S = 60.0  # the API imports FastAPI and connects to Redis: a second or two
WATCH_INTERVAL_S = 0.5  # how often the API and worker processes are checked while following
API_STOP_GRACE_S = 10.0  # uvicorn's graceful shutdown; our own streams are closed by then
# a worker's warm shutdown waits for the job under way, which stops at its next step once
# cancelled; a GPT-2 step on a slow CPU takes well under a second
WORKER_STOP_GRACE_S = 30.0
FORCED_STOP_S = 10.0  # after a second SIGTERM: RQ kills its horse, uvicorn drops connections


@dataclass(frozen=True)
class Child:
    """A process the demo started, in its own session: a Ctrl-C reaches only the demo, which
    then stops it in order."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=400, help="GPT-2 optimizer steps")
    parser.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary size")
    parser.add_argument("--preset", default="tiny", help="GPT-2 size preset")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument(
        "--no-worker", action="store_true", help="use workers that are already running"
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """The demo, with its settings and installation checked before anything starts."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tokenizer_id, run_id = f"demo-bpe-{stamp}", f"demo-gpt2-{stamp}"
    try:  # checked before anything starts
        tokenizer = TokenizerCreate(
            spec=TokenizerSpec(kind="bpe", vocab_size=args.vocab_size), tokenizer_id=tokenizer_id
        )
        model = RunCreate(spec=_model_spec(tokenizer_id, args), run_id=run_id)
    except ValidationError as exc:
        raise invalid_input(exc, what="demo arguments") from exc
    _check_installed(with_worker=not args.no_worker)
    redis_url = settings.redis.url.get_secret_value() if settings.redis.url else None
    # the API and worker processes share this Redis; holding it here keeps an embedded one up
    # from the first process's start to the last one's stop
    with open_redis(redis_url, settings.data_root, timeout_s=settings.redis.connect_timeout_s):
        return _run(settings, args, tokenizer=tokenizer, model=model, ids=(tokenizer_id, run_id))


def _check_installed(*, with_worker: bool) -> None:
    """The demo starts the API and a worker with this interpreter: both must be installed."""
    if importlib.util.find_spec("trainer_api") is None:
        raise AppError(
            ErrorCode.CONFIG_INVALID,
            "`trainctl demo` starts an API and needs the API package: "
            "pip install ./libs/platform_core ./services/api",
        )
    if with_worker and worker_commands.find("worker") is None:
        raise AppError(
            ErrorCode.CONFIG_INVALID,
            "`trainctl demo` starts a worker and needs the worker package: "
            "pip install ./libs/platform_core ./services/worker (it brings torch); "
            "or pass --no-worker when workers on this Redis already run",
        )


def _run(
    settings: Settings,
    args: argparse.Namespace,
    *,
    tokenizer: TokenizerCreate,
    model: RunCreate,
    ids: tuple[str, str],
) -> int:
    tokenizer_id, run_id = ids
    children: list[Child] = []
    try:
        port = _free_port()
        api_env = {"APP__API__HOST": "127.0.0.1", "APP__API__PORT": str(port)}
        children.append(spawn(settings, "api", ["-m", "trainer_api"], api_env))
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, children[0], READY_TIMEOUT_S)
        print(f"API ready at {url}")
        if not args.no_worker:
            worker = ["-m", "trainer_cli", "worker"]
            children.append(spawn(settings, "worker", worker, {}))
        api_key = settings.security.api_key
        secret = api_key.get_secret_value() if api_key is not None else None
        with TrainerClient(url, api_key=secret) as client:
            runs: list[tuple[str, Callable[[str], JobAccepted]]] = [
                (
                    f"== tokenizer {tokenizer_id}: byte-level BPE on the built-in corpus",
                    lambda key: client.train_tokenizer(tokenizer, idempotency_key=key),
                ),
                (
                    f"== model {run_id}: GPT-2 {args.preset}, {args.steps} steps",
                    lambda key: client.train_model(model, idempotency_key=key),
                ),
            ]
            for header, submit in runs:
                print(header)
                code = submit_and_follow(client, submit, children)
                if code != ExitCode.OK:
                    return code
            _report(client, run_id, settings.data_root)
            return ExitCode.OK
    finally:
        for child in reversed(children):  # the worker first: its job may still publish
            grace = WORKER_STOP_GRACE_S if child.name == "worker" else API_STOP_GRACE_S
            stop(child, grace)


def _model_spec(tokenizer_id: str, args: argparse.Namespace) -> TrainRunSpec:
    steps: int = args.steps
    train = TrainConfig(
        max_steps=steps,
        batch_size=16,
        block_size=64,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=min(50, steps // 4),
        eval_every=max(1, steps // 4),
        eval_batches=10,
        progress_every_s=0.5,
        device=args.device,
        seed=args.seed,
    )
    model = ModelSpec(family="gpt2", preset=args.preset)
    return TrainRunSpec(
        model=model, tokenizer_id=tokenizer_id, train=train, sample_max_new_tokens=48
    )


def submit_and_follow(
    client: TrainerClient, submit: Callable[[str], JobAccepted], children: list[Child]
) -> int:
    """Submit a run (with an idempotency key: the POST may be retried) and follow it to its
    end; a Ctrl-C or an error on the way cancels it."""
    accepted = submit(uuid.uuid4().hex)
    try:
        return follow_while_alive(client, accepted.run_id, children)
    except BaseException:
        cancel_quietly(client, accepted.run_id)
        raise


def follow_while_alive(client: TrainerClient, run_id: str, children: list[Child]) -> int:
    """`follow_run` in a thread, so that a process of ours that dies ends the wait: the event
    stream would otherwise carry nothing but keep-alives from then on."""
    outcome: Future[int] = Future()
    view = ProgressView(out=sys.stdout)

    def follow() -> None:
        try:
            outcome.set_result(follow_run(client, run_id, view.handle))
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome.set_exception(exc)

    threading.Thread(target=follow, name=f"follow-{run_id}", daemon=True).start()
    while True:
        try:
            return outcome.result(timeout=WATCH_INTERVAL_S)
        except TimeoutError:
            pass
        for child in children:
            code = child.process.poll()
            if code is not None:
                raise AppError(
                    ErrorCode.UPSTREAM_UNAVAILABLE,
                    f"the {child.name} process exited with {code} before run {run_id} "
                    f"ended; see {child.log}",
                )


def cancel_quietly(client: TrainerClient, run_id: str) -> None:
    try:
        client.cancel_run(run_id)
        print(f"\nrun {run_id}: cancelled", file=sys.stderr)
    except ApiError:  # it has already ended, or the API is gone: nothing left to stop
        pass


def _report(client: TrainerClient, run_id: str, data_root: Path) -> None:
    metrics = client.get_run(run_id).metrics or RunMetrics()
    first, final = format_number(metrics.first_perplexity), format_number(metrics.final_perplexity)
    print(f"\neval perplexity: first {first} -> final {final}")
    for sample in client.get_eval(run_id).samples[:1]:
        print(f"sample: {sample.prompt!r} -> {sample.output!r}")
    print(f"artifacts: {data_root / 'runs' / run_id}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(settings: Settings, name: str, args: list[str], env: Mapping[str, str]) -> Child:
    """`python ARGS` in its own session, its output in `<data root>/logs/demo-<name>.log` so
    the terminal shows progress. With no Redis configured it takes its own lease on this data
    root's embedded server."""
    log_dir = settings.data_root / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"demo-{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - this interpreter, our own modules
            [sys.executable, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    print(f"{name} started (pid {process.pid}, log {log})")
    return Child(name, process, log)


def wait_until_ready(url: str, api: Child, timeout_s: float) -> None:
    """Poll GET /readyz until the API is ready; fail if its process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    with TrainerClient(url, max_retries=0, timeout_s=2.0) as probe:
        while True:
            try:
                ready = probe.readyz().status == "ready"
            except ApiError:
                ready = False  # not listening yet
            if ready:
                return
            code = api.process.poll()
            if code is not None:
                message = f"the API process exited with {code} before it was ready; see {api.log}"
                raise AppError(ErrorCode.UPSTREAM_UNAVAILABLE, message)
            if time.monotonic() > deadline:
                message = f"the API was not ready within {timeout_s:g} s; see {api.log}"
                raise AppError(ErrorCode.UPSTREAM_UNAVAILABLE, message)
            time.sleep(0.1)


def stop(child: Child, grace_s: float) -> None:
    """SIGTERM: a warm shutdown for RQ (the job under way ends first), a graceful one for
    uvicorn. A second SIGTERM after `grace_s` forces both (RQ then kills its work horse);
    SIGKILL when even that is ignored."""
    try:
        for wait_s in (grace_s, FORCED_STOP_S):
            if child.process.poll() is not None:
                return
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                print(f"the {child.name} did not stop within {wait_s:g} s", file=sys.stderr)
    finally:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait()
