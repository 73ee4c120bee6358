"""Issue 13's benchmark: the studies' parts (b) and (c) here, the tracking parts (a) and (d)
from bench/tracking.py (`tracking_figures`), all five figures in the last line.

(b) trial_overhead_ratio: N trivial trials (default 1,000) through the study machinery (the
    trial jobs on RQ's queue, run in-process by the project's worker class: RQ's
    SimpleWorker with the heartbeat of `trainctl worker`'s forking one; the run lifecycle in
    Redis, Optuna's default journal-file storage, the Lua hand-on, the next trial's enqueue,
    the study's retention pass) over Optuna's in-memory ask/tell loop on the same objective
    and the same seeded TPE. Only the objective is trivial.
(c) disk_budget_ratio: peak checkpoint bytes on disk (every trial's checkpoints folder, a
    write in progress included, sampled every few ms) during a study of 30 real tiny
    char_lstm trials, over the study's checkpoint_budget_gb.
storage: K processes each asking and telling M trivial trials of one study at once, on the
    journal file and on SQLite: trials per second and the errors each storage raised.

Usage: python bench/hpo.py [--trials 1000] [--disk-trials 30] [--writers 4] [--per-writer 50]
    [--tax-repeats 5] [--tax-steps 320] [--outage-s 10]
Needs a Redis: REDIS_URL, else the project's embedded one. The last line printed is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from pydoc_data.topics import topics

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # bench/tracking.py: issue 13's (a) and (d)

import optuna  # noqa: E402 - after the repository is on the path
import redis  # noqa: E402
from rq import Queue  # noqa: E402

from platform_core import queue as job_queue  # noqa: E402
from platform_core import studies as study_state  # noqa: E402
from platform_core.embedded_redis import EmbeddedRedis  # noqa: E402
from platform_core.json_types import JsonObject  # noqa: E402
from platform_core.redis_connection import connect  # noqa: E402
from platform_core.run_state import RunStatus  # noqa: E402
from platform_core.specs import TrainRunSpec  # noqa: E402
from platform_core.studies import StudyStore  # noqa: E402
from platform_core.study_specs import StudySpec, validate_study  # noqa: E402
from tracking import tracking_figures  # noqa: E402
from trainer_worker.checkpoint_retention import DiskProbe  # noqa: E402
from trainer_worker.job_context import JobContext, Outcome  # noqa: E402
from trainer_worker.studies.retention import tree_bytes  # noqa: E402
from trainer_worker.studies.trial_job import Pruner, run_trial  # noqa: E402
from trainer_worker.worker import InProcessWorker  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
SEED = 7
HEADLINE = ("telemetry_tax", "buffer_replay_lost", "buffer_replay_duplicated")  # (a), (d)


def objective_value(learning_rate: float, batch_size: int) -> float:
    """The trivial objective both sides optimise: a bowl around lr 1e-2, batch 16."""
    return (math.log10(learning_rate) + 2.0) ** 2 + abs(batch_size - 16) / 16


def trivial_train(
    train: TrainRunSpec, context: JobContext, should_prune: Pruner, probe: DiskProbe | None
) -> Outcome:
    """A trial body that trains nothing: the objective of its params, as its best value."""
    value = objective_value(train.train.learning_rate, train.train.batch_size)
    return Outcome({"best_eval_loss": value}, "trivial trial")


def bench_trial(run_id: str, spec: JsonObject, *, user_id: int | None = None) -> JsonObject:
    """The study's trial job with the trivial body (RQ imports it from this module)."""
    return run_trial(run_id, spec, train=trivial_train)


def bench_finalize(study_id: str) -> JsonObject:
    """No evaluation for trivial trials: the bench times the trials."""
    return {"study_id": study_id}


def _search_space() -> JsonObject:
    return {
        "train.learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 1e-1},
        "train.batch_size": {"type": "categorical", "choices": [4, 8, 16, 32]},
    }


def _base(tokenizer_id: str) -> JsonObject:
    return {
        "model": {"family": "char_lstm", "preset": "tiny"},
        "tokenizer_id": tokenizer_id,
        "corpus": {"path": "corpus.txt"},
        "train": {
            "max_steps": 20,
            "batch_size": 8,
            "block_size": 32,
            "learning_rate": 1e-2,
            "min_lr": 0.0,
            "warmup_steps": 0,
            "eval_every": 5,
            "eval_batches": 1,
            "checkpoint_every": 4,
            "progress_every_steps": 20,
            "device": "cpu",
            "seed": 3,
        },
        "sample_prompts": [],
    }


def _work(client: redis.Redis) -> None:
    InProcessWorker([Queue(job_queue.TRAINING_QUEUE, connection=client)], connection=client).work(
        burst=True
    )


def trial_overhead(client: redis.Redis, n_trials: int) -> dict[str, float]:
    """(b): the study machinery over the in-memory ask/tell loop, same objective and TPE."""
    spec = StudySpec.model_validate(
        {
            "base": _base("tok"),
            "search_space": _search_space(),
            "n_trials": n_trials,
            "sampler": {"seed": SEED},
            "pruner": {"type": "none"},
        }
    )
    job_queue.JOB_FUNCTIONS["study_trial"] = "__main__.bench_trial"
    study_state.FINALIZE_FUNCTION = "__main__.bench_finalize"
    started = time.perf_counter()
    StudyStore(client).create("bench-overhead", spec, user_id=None)
    _work(client)
    machinery_s = time.perf_counter() - started
    view = StudyStore(client).view("bench-overhead")
    assert sum(t.state == "COMPLETE" for t in view.trials) == n_trials, view.message

    baseline = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=SEED))
    started = time.perf_counter()
    for _ in range(n_trials):
        trial = baseline.ask()
        lr = trial.suggest_float("train.learning_rate", 1e-4, 1e-1, log=True)
        batch = trial.suggest_categorical("train.batch_size", [4, 8, 16, 32])
        baseline.tell(trial, objective_value(lr, batch))
    in_memory_s = time.perf_counter() - started
    return {
        "machinery_s": round(machinery_s, 2),
        "in_memory_s": round(in_memory_s, 2),
        "trial_overhead_ratio": round(machinery_s / in_memory_s, 3),
        "machinery_ms_per_trial": round(1000 * machinery_s / n_trials, 2),
        "in_memory_ms_per_trial": round(1000 * in_memory_s / n_trials, 2),
    }


def _checkpoint_bytes(runs: Path) -> int:
    if not runs.is_dir():
        return 0
    return sum(tree_bytes(run / "checkpoints") for run in list(runs.iterdir()))


def disk_budget(client: redis.Redis, data_root: Path, n_trials: int) -> dict[str, float]:
    """(c): the peak of every trial's checkpoints on disk over the study's budget."""
    job_queue.JOB_FUNCTIONS["study_trial"] = "trainer_worker.studies.trial_job.study_trial"
    study_state.FINALIZE_FUNCTION = "trainer_worker.studies.finalize.finalize_study"
    # a tiny char_lstm checkpoint (weights + AdamW moments) is ~0.45 MB here (+0.25 MB kept
    # free for the run's records): the budget holds
    # 3 of them per running trial and for the best, so retention must prune as trials run
    budget_gb = 2 * 3 * 0.75e6 / 2**30
    spec = validate_study(
        {
            "base": _base("tok"),
            "search_space": _search_space(),
            "n_trials": n_trials,
            "parallelism": 1,
            "sampler": {"seed": SEED},
            "pruner": {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 5},
            "checkpoint_budget_gb": budget_gb,
        }
    )
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _checkpoint_bytes(data_root / "runs"))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    StudyStore(client).create("bench-disk", spec, user_id=None)
    _work(client)
    stop.set()
    sampler.join()
    view = StudyStore(client).view("bench-disk")
    assert view.status is RunStatus.COMPLETED, view.message
    budget = budget_gb * 2**30
    return {
        "disk_budget_ratio": round(peak[0] / budget, 3),
        "disk_peak_bytes": peak[0],
        "disk_budget_bytes": int(budget),
        "disk_after_bytes": _checkpoint_bytes(data_root / "runs"),
        "disk_study_s": round(time.perf_counter() - started, 1),
        "disk_trials_pruned": sum(t.state == "PRUNED" for t in view.trials),
    }


def _writer(url: str, name: str, trials: int, results: multiprocessing.Queue[object]) -> None:
    errors = 0
    storage = _open_storage(url)
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler()
    )
    done = 0
    while done < trials:
        try:
            trial = study.ask()
            x = trial.suggest_float("x", -1.0, 1.0)
            study.tell(trial, x * x)
            done += 1
        except Exception:
            errors += 1
            if errors > 10 * trials:
                break
    results.put((done, errors))


def _open_storage(url: str) -> optuna.storages.BaseStorage:
    if url.startswith("journal:"):
        backend = optuna.storages.journal.JournalFileBackend(url.removeprefix("journal:"))
        return optuna.storages.JournalStorage(backend)
    return optuna.storages.RDBStorage(url)


def parallel_storage(folder: Path, writers: int, per_writer: int) -> dict[str, float]:
    """Journal file vs SQLite: K processes on one study at once."""
    figures: dict[str, float] = {}
    for label, url in (
        ("journal", f"journal:{folder / 'optuna.journal'}"),
        ("sqlite", f"sqlite:///{folder / 'optuna.db'}"),
    ):
        optuna.create_study(study_name="p", storage=_open_storage(url))
        results: multiprocessing.Queue[object] = multiprocessing.Queue()
        procs = [
            multiprocessing.Process(target=_writer, args=(url, "p", per_writer, results))
            for _ in range(writers)
        ]
        started = time.perf_counter()
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=600) for _ in procs]
        for proc in procs:
            proc.join()
        elapsed = time.perf_counter() - started
        done = sum(int(o[0]) for o in outcomes if isinstance(o, tuple))
        errors = sum(int(o[1]) for o in outcomes if isinstance(o, tuple))
        stored = len(optuna.load_study(study_name="p", storage=_open_storage(url)).trials)
        figures[f"{label}_trials_per_s"] = round(done / elapsed, 1)
        figures[f"{label}_errors"] = errors
        figures[f"{label}_trials_stored"] = stored
    return figures


def _prepare(client: redis.Redis, data_root: Path) -> None:
    from platform_core.queue import enqueue_job  # noqa: PLC0415 - after the env is set

    text = "\n\n".join(topics[key] for key in sorted(topics))[:30_000]
    (data_root / "corpus.txt").write_text(text, encoding="utf-8")
    enqueue_job(
        client, "train_tokenizer", "tok", {"kind": "char", "corpus": {"path": "corpus.txt"}}
    )
    _work(client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--disk-trials", type=int, default=30)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--per-writer", type=int, default=50)
    parser.add_argument("--tax-repeats", type=int, default=5, help="(a): paired runs on / off")
    parser.add_argument("--tax-steps", type=int, default=320, help="(a): steps per run")
    parser.add_argument("--outage-s", type=float, default=10.0, help="(d): seconds MLflow is down")
    args = parser.parse_args()
    logging.getLogger("rq").setLevel(logging.WARNING)  # a line per job would drown the figures
    with tempfile.TemporaryDirectory(prefix="bench-hpo-") as tmp:
        data_root = Path(tmp) / "data"
        data_root.mkdir()
        os.environ["APP__DATA_ROOT"] = str(data_root)
        embedded = None
        url = os.environ.get("REDIS_URL")
        if url is None:
            embedded = EmbeddedRedis(Path(tmp) / "redis")
            url = embedded.acquire()
        client = connect(url)
        try:
            client.flushdb()
            _prepare(client, data_root)
            overhead = trial_overhead(client, args.trials)
            print(json.dumps({"part": "b", **overhead}), flush=True)
            disk = disk_budget(client, data_root, args.disk_trials)
            print(json.dumps({"part": "c", **disk}), flush=True)
            storage_dir = Path(tmp) / "storage"
            storage_dir.mkdir()
            storage = parallel_storage(storage_dir, args.writers, args.per_writer)
            print(json.dumps({"part": "storage", **storage}), flush=True)
        finally:
            client.close()
            if embedded is not None:
                embedded.release()
    # (a) and (d), in a data root and Redis of their own
    tracking = tracking_figures(args.tax_repeats, args.tax_steps, args.outage_s)
    print(
        json.dumps(
            {
                "bench": "hpo",
                "telemetry_tax": tracking["telemetry_tax"],
                "trial_overhead_ratio": overhead["trial_overhead_ratio"],
                "disk_budget_ratio": disk["disk_budget_ratio"],
                "buffer_replay_lost": tracking["buffer_replay_lost"],
                "buffer_replay_duplicated": tracking["buffer_replay_duplicated"],
                "trials": args.trials,
                "disk_trials": args.disk_trials,
                **{k: v for k, v in overhead.items() if k != "trial_overhead_ratio"},
                **{k: v for k, v in disk.items() if k != "disk_budget_ratio"},
                **storage,
                **{k: v for k, v in tracking.items() if k not in HEADLINE},
                "tax_repeats": args.tax_repeats,
                "tax_steps": args.tax_steps,
            }
        )
    )


if __name__ == "__main__":
    main()
