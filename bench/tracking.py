"""Issue 13's tracking benchmarks: (a) the telemetry tax and (d) metrics lost and duplicated
over an MLflow outage.

(a) `telemetry_tax`: steady-state tokens/s of the worker's real `train_model` job (GPT-2
tiny on the CPU, enqueued on Redis, run by an in-process RQ SimpleWorker, events on the bus)
with MLflow tracking on (the default SQLite store under the data root) divided by the same
job with tracking off, on the same model, data and steps. Throughput is read from the job's
own progress events over the same window as `train_overhead.py` (after warm-up, before the
final eval); the default 320 steps make that window several seconds long on a quiet machine,
so it holds the tracker's periodic work (a buffer append a second, a send every 5 s) in
proportion rather than by luck. The two alternate which goes first; the figure is the median
of the paired ratios, printed with their spread. One tracked run goes first, unmeasured: it
creates the store and imports MLflow, as a worker does once (a steady state is what the
floor is about). Beside the ratio: the sender thread's CPU seconds per second of training
(`sender_cpu_share`, which the load of other processes hardly moves), and the training
thread's CPU time per token with tracking on over off (`train_thread_cpu_ratio`: what
tracking adds to the thread that trains, 1.0 when it adds nothing; under a heavy load torch's
spinning threads make it as noisy as the ratio, docs/benchmarks.md).

(d) `buffer_replay`: a real MLflow server (MLflow's own server code on a SQLite store, the
tests' `StoppableMlflow`) receives a run's metrics from the tracker; after two seconds it is
killed, its port stays closed for `outage_s` seconds, then it comes back. The run reports
50 steps a second throughout. Afterwards every (key, step) is read back with MlflowClient:
lost = expected pairs missing, duplicated = extra copies.

Usage: python bench/tracking.py [--repeats 5] [--steps 320] [--outage-s 10]
Redis: REDIS_URL when set, else the project's embedded redis-server under a temp data root.
The last line printed is one JSON object. `bench/hpo.py` imports `tracking_figures`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from pydoc_data.topics import topics

import redis

from platform_core.events import MetricsProgress, MetricsProgressPayload
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.manifests import read_tracking_record
from platform_core.redis_connection import resolve_redis_url
from platform_core.settings import TrackingSettings
from train_overhead import CASES, PROGRESS_EVERY, WARMUP_STEPS, job_tokens_per_s, train_tokenizer
from trainer_worker.tracking.event_metrics import EventMetrics
from trainer_worker.tracking.tracker import Tracker

sys.path.insert(0, str(Path(__file__).parents[1]))  # the tests' MLflow server helper
from tests.worker.mlflow_server import StoppableMlflow

GPT2 = next(case for case in CASES if case.family == "gpt2")
STEPS_PER_S = 50  # (d): the pace of progress reports, a fast small model's


class _SenderCpu(logging.Handler):
    """The sender's CPU seconds after connecting (which happens while the run prepares),
    from each tracked run's `tracking.ended` log record."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.cpu_s: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "tracking.ended":
            total = float(getattr(record, "sender_cpu_s", 0.0))
            connecting = float(getattr(record, "connect_cpu_s", 0.0))
            self.cpu_s.append(total - connecting)  # while the run trained and ended


@dataclass
class _Runs:
    """One side of the pairs: tokens/s and the training thread's CPU seconds per token."""

    tokens_per_s: list[float] = field(default_factory=list)
    cpu_per_token: list[float] = field(default_factory=list)


def _tracked_run(
    client: redis.Redis, tokenizer_id: str, steps: int, run_id: str, *, tracking: bool
) -> tuple[float, float]:
    """The job's tokens/s, and the CPU seconds its thread (this one: the SimpleWorker runs
    the job in-process) spent per token trained, preparing and ending included."""
    os.environ["APP__TRACKING__ENABLED"] = "true" if tracking else "false"
    cpu = time.thread_time()
    tokens_per_s = job_tokens_per_s(client, GPT2, tokenizer_id, steps, run_id)
    return tokens_per_s, (time.thread_time() - cpu) / (steps * GPT2.batch_size * GPT2.block_size)


def _spread(values: list[float]) -> JsonObject:
    """The median and the range of `values`, rounded for the report."""
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def telemetry_tax(client: redis.Redis, repeats: int = 5, steps: int = 320) -> JsonObject:
    """Tokens/s with tracking on / off (the median of paired ratios) and the figures behind
    it. APP__DATA_ROOT must name the data root holding corpus.txt."""
    tokenizer_id = train_tokenizer(client, GPT2)
    _tracked_run(client, tokenizer_id, steps, "warm-up", tracking=True)
    sender = _SenderCpu()
    tracker_log = logging.getLogger("trainer_worker.tracking.tracker")
    tracker_log.setLevel(logging.INFO)
    tracker_log.addHandler(sender)
    on, off = _Runs(), _Runs()
    try:
        for rep in range(repeats):
            order = (True, False) if rep % 2 else (False, True)
            for tracking in order:
                side = on if tracking else off
                tokens_per_s, cpu_per_token = _tracked_run(
                    client, tokenizer_id, steps, f"r{rep}-{tracking}", tracking=tracking
                )
                side.tokens_per_s.append(tokens_per_s)
                side.cpu_per_token.append(cpu_per_token)
    finally:
        tracker_log.removeHandler(sender)
    ratios = [a / b for a, b in zip(on.tokens_per_s, off.tokens_per_s, strict=True)]
    cpu_ratios = [a / b for a, b in zip(on.cpu_per_token, off.cpu_per_token, strict=True)]
    # a run's tokens over its tokens/s: roughly its training seconds, the sender's CPU share
    run_s = steps * GPT2.batch_size * GPT2.block_size / statistics.median(on.tokens_per_s)
    sender_s = statistics.median(sender.cpu_s) if sender.cpu_s else None
    return {
        "telemetry_tax": round(statistics.median(ratios), 4),
        "ratio_spread": _spread(ratios),
        "ratios": [round(r, 4) for r in ratios],
        "train_thread_cpu_ratio": _spread(cpu_ratios),
        "sender_cpu_s": None if sender_s is None else round(sender_s, 3),
        "sender_cpu_share": None if sender_s is None else round(sender_s / run_s, 4),
        "tokens_per_s_on": round(statistics.median(on.tokens_per_s), 1),
        "tokens_per_s_off": round(statistics.median(off.tokens_per_s), 1),
        "best_of_ratio": round(max(on.tokens_per_s) / max(off.tokens_per_s), 4),
        "load_average": round(os.getloadavg()[0], 2),
    }


def buffer_replay(folder: Path, outage_s: float = 10.0) -> tuple[int, int]:
    """(lost, duplicated) metrics of a run whose MLflow server is down for `outage_s`."""
    layout = DataLayout(folder / "data")
    layout.root.mkdir(parents=True)
    run_id = "outage"
    with StoppableMlflow(folder / "mlflow") as server:
        settings = TrackingSettings(uri=server.url, final_wait_s=120, request_timeout_s=2)
        tracker = Tracker(
            run_id=run_id, kind="train_model", attempt=1, layout=layout, settings=settings
        )
        sent: list[MetricsProgress] = []
        step = 0

        def report_for(seconds: float) -> None:
            nonlocal step
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                step += 1
                payload = MetricsProgressPayload(
                    step=step, epoch=step / 1000, loss=3.0, lr=1e-3, tokens_per_s=1e4
                )
                event = MetricsProgress(run_id=run_id, payload=payload)
                tracker.observe(event)
                sent.append(event)
                time.sleep(1 / STEPS_PER_S)

        report_for(2.0)
        server.stop()
        report_for(outage_s)  # the port is closed throughout
        server.start()
        report_for(2.0)
        report = tracker.finish("FINISHED")
        if report is None or not report.synced:
            print(f"tracking did not sync: {report}", flush=True)
        print(
            f"outage {outage_s:.0f} s: {step} steps reported, sender stats {tracker.stats}",
            flush=True,
        )
        expected = Counter(
            row.identity for event in sent for row in EventMetrics(folder).rows(event)
        )
        mlflow_run_id = read_tracking_record(layout.tracking_record(run_id)).mlflow_run_id
        from mlflow import MlflowClient  # noqa: PLC0415 - the bench's reading side only

        reader = MlflowClient(tracking_uri=server.url)
        found: Counter[tuple[str, int]] = Counter()
        for key in sorted({key for key, _ in expected}):
            for metric in reader.get_metric_history(str(mlflow_run_id), key):
                found[(key, int(metric.step))] += 1
    lost = sum(1 for identity in expected if found[identity] == 0)
    duplicated = sum(count - 1 for count in found.values() if count > 1)
    return lost, duplicated


def tracking_figures(
    repeats: int = 5, steps: int = 320, outage_s: float | None = 10.0
) -> JsonObject:
    """(a) and (d) in a data root and Redis of their own (`outage_s` None: (a) alone)."""
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as name:
        folder = Path(name)
        data_root = folder / "data"
        data_root.mkdir()
        text = "\n\n".join(topics[key] for key in sorted(topics))
        (data_root / "corpus.txt").write_text(text, encoding="utf-8")
        os.environ["APP__DATA_ROOT"] = str(data_root)
        url, embedded = resolve_redis_url(os.environ.get("REDIS_URL"), data_root)
        client = redis.Redis.from_url(url)
        try:
            tax = telemetry_tax(client, repeats, steps)
        finally:
            client.close()
            if embedded is not None:
                embedded.release()
        print(f"telemetry: {json.dumps(tax)}", flush=True)
        lost, duplicated = (
            (None, None) if outage_s is None else buffer_replay(folder / "outage", outage_s)
        )
    return {
        "telemetry_tax": tax["telemetry_tax"],
        "buffer_replay_lost": lost,
        "buffer_replay_duplicated": duplicated,
        "telemetry_tax_spread": tax["ratio_spread"],
        "train_thread_cpu_ratio": tax["train_thread_cpu_ratio"],
        "tokens_per_s_on": tax["tokens_per_s_on"],
        "tokens_per_s_off": tax["tokens_per_s_off"],
        "best_of_ratio": tax["best_of_ratio"],
        "sender_cpu_share": tax["sender_cpu_share"],
        "load_average": tax["load_average"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="paired runs, tracking on/off")
    parser.add_argument("--steps", type=int, default=320, help="training steps per run")
    parser.add_argument("--outage-s", type=float, default=10.0, help="seconds MLflow is down")
    parser.add_argument(
        "--telemetry-only", action="store_true", help="(a) alone: no MLflow server needed"
    )
    args = parser.parse_args()
    if args.steps < WARMUP_STEPS + 2 * PROGRESS_EVERY or args.steps % PROGRESS_EVERY:
        parser.error(f"--steps: a multiple of {PROGRESS_EVERY}, at least 30")
    logging.getLogger("rq").setLevel(logging.WARNING)
    figures = tracking_figures(
        args.repeats, args.steps, None if args.telemetry_only else args.outage_s
    )
    result: JsonObject = {
        "bench": "tracking",
        **figures,
        "repeats": args.repeats,
        "steps": args.steps,
        "outage_s": args.outage_s,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
