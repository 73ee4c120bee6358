"""Train a BPE tokenizer and a tiny GPT-2 on the built-in corpus, following both live.

This is the README's main job: it starts a worker process (sharing the embedded Redis when
none is configured), enqueues the two runs, shows each one's progress from the event bus and
prints the first and final eval perplexity and a sample.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from platform_core.errors import AppError, ErrorCode, ExitCode
from platform_core.event_bus import EventBus
from platform_core.events import Event, JobCompleted, JobFailed
from platform_core.json_types import JsonObject
from platform_core.queue import enqueue_job
from platform_core.settings import Settings
from trainer_worker.cli.follow import follow_run
from trainer_worker.cli.progress import ProgressView


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=400, help="GPT-2 optimizer steps")
    parser.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary size")
    parser.add_argument("--preset", default="tiny", help="GPT-2 size preset")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument(
        "--no-worker", action="store_true", help="use workers that are already running"
    )


def run(client: redis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tokenizer_id, run_id = f"demo-bpe-{stamp}", f"demo-gpt2-{stamp}"
    worker = None if args.no_worker else _start_worker(settings)
    try:
        tokenizer_spec: JsonObject = {"kind": "bpe", "vocab_size": args.vocab_size}
        print(f"== tokenizer {tokenizer_id}: byte-level BPE on the built-in corpus")
        outcome = _submit_and_follow(
            client, "train_tokenizer", tokenizer_id, tokenizer_spec, worker
        )
        if not isinstance(outcome, JobCompleted):
            return _exit_code(outcome)
        model_spec: JsonObject = {
            "model": {"family": "gpt2", "preset": args.preset},
            "tokenizer_id": tokenizer_id,
            "train": {
                "max_steps": args.steps,
                "batch_size": 16,
                "block_size": 64,
                "learning_rate": 3e-3,
                "min_lr": 3e-4,
                "warmup_steps": min(50, args.steps // 4),
                "eval_every": max(1, args.steps // 4),
                "eval_batches": 10,
                "progress_every_s": 0.5,
                "device": args.device,
                "seed": args.seed,
            },
            "sample_max_new_tokens": 48,
        }
        print(f"== model {run_id}: GPT-2 {args.preset}, {args.steps} steps")
        outcome = _submit_and_follow(client, "train_model", run_id, model_spec, worker)
        if not isinstance(outcome, JobCompleted):
            return _exit_code(outcome)
        _report(settings.data_root / "runs" / run_id)
        return ExitCode.OK
    finally:
        if worker is not None:
            _stop_worker(worker)


def _submit_and_follow(
    client: redis.Redis,
    kind: str,
    run_id: str,
    spec: JsonObject,
    worker: subprocess.Popen[bytes] | None,
) -> Event:
    bus = EventBus(client)
    after = bus.last_id()
    if kind == "train_tokenizer":
        enqueue_job(client, "train_tokenizer", run_id, spec, description="demo tokenizer")
    else:
        enqueue_job(client, "train_model", run_id, spec, description="demo GPT-2")
    view = ProgressView()
    return follow_run(
        bus,
        run_id,
        view.handle,
        after_id=after,
        still_alive=lambda: worker is None or worker.poll() is None,
    )


def _report(folder: Path) -> None:
    metrics = json.loads((folder / "eval" / "metrics.json").read_text(encoding="utf-8"))
    first, final = metrics.get("first_perplexity"), metrics.get("final_perplexity")
    print()
    print(f"eval perplexity: first {first:.2f} -> final {final:.2f}")
    samples = (folder / "eval" / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    if samples:
        sample = json.loads(samples[0])
        print(f"sample: {sample['prompt']!r} -> {sample['output']!r}")
    print(f"artifacts: {folder}")


def _exit_code(outcome: Event) -> int:
    if isinstance(outcome, JobFailed):
        return outcome.payload.error_code.exit_code
    return ExitCode.TRAINING


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    """A worker process with its log in the data root, so the terminal shows progress. With
    no Redis configured it takes its own lease on this data root's embedded server."""
    log_dir = settings.data_root / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / "demo-worker.log").open("ab")
    worker = subprocess.Popen(
        [sys.executable, "-m", "trainer_worker.cli.main", "worker"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    print(f"worker started (pid {worker.pid}, log {log_dir / 'demo-worker.log'})")
    return worker


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)  # RQ's warm shutdown
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    if worker.returncode not in (0, -signal.SIGTERM):
        raise AppError(ErrorCode.INTERNAL, f"worker exited with {worker.returncode}")
