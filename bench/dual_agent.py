"""The dual-agent family on the generated posts (issue 12's benchmark): a tiny encoder
trained from scratch through the real `train_model` job (in-process RQ worker, real Redis),
its criteria macro F1 and evidence char F1 on the held-out-template test split beside the
keyword baseline's, and the latency of predicting one post with the trained run.

Usage: python bench/dual_agent.py [--steps 300] [--posts 600] [--predictions 50]
Redis: REDIS_URL when set, else the project's embedded redis-server under a temp data root.
The last line printed is one JSON object:
{"bench": "dual_agent", "criteria_macro_f1": ..., "baseline_criteria_macro_f1": ...,
 "evidence_char_f1": ..., "baseline_evidence_char_f1": ..., "predict_p50_ms": ...}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import redis
import torch
from rq import Queue, SimpleWorker

from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.manifests import read_run_manifest
from platform_core.queue import TRAINING_QUEUE, enqueue_job
from platform_core.redis_connection import resolve_redis_url
from platform_core.run_state import RunStateStore, RunStatus
from trainer_worker.dual_agent.generator import generate_splits
from trainer_worker.dual_agent.predict import load_predictor, predict_texts

RUN_ID = "bench-dual"


def spec(steps: int, posts: int) -> JsonObject:
    """The spec of tests/worker/test_dual_agent_run.py, with the steps and posts asked for."""
    return {
        "model": {"family": "dual_agent", "preset": "tiny", "dropout": 0.0},
        "dual_agent": {"generated_posts": posts, "split_seed": 7, "vocab_size": 1000},
        "train": {
            "max_steps": steps,
            "batch_size": 16,
            "block_size": 64,
            "learning_rate": 4e-3,
            "min_lr": 4e-4,
            "warmup_steps": 20,
            "weight_decay": 0.01,
            "eval_every": 100,
            "checkpoint_every": None,
            "device": "cpu",
            "seed": 0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--posts", type=int, default=600)
    parser.add_argument("--predictions", type=int, default=50, help="single-post predictions")
    args = parser.parse_args()
    logging.getLogger("rq").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="dual-agent-") as folder:
        data_root = Path(folder)
        os.environ["APP__DATA_ROOT"] = str(data_root)
        url, embedded = resolve_redis_url(os.environ.get("REDIS_URL"), data_root)
        client = redis.Redis.from_url(url)
        try:
            started = time.perf_counter()
            enqueue_job(client, "train_model", RUN_ID, spec(args.steps, args.posts))
            queue = Queue(TRAINING_QUEUE, connection=client)
            SimpleWorker([queue], connection=client).work(burst=True)
            train_s = time.perf_counter() - started
            store = RunStateStore(client)
            if store.status(RUN_ID) is not RunStatus.COMPLETED:
                raise RuntimeError(f"{RUN_ID}: {store.message(RUN_ID)}")
            manifest = read_run_manifest(DataLayout(data_root).run_manifest(RUN_ID))
            record = manifest.dual_agent
            if record is None:
                raise RuntimeError("the manifest has no dual_agent record")
            model, tokenizer, thresholds, width = load_predictor(data_root, RUN_ID)
            posts = generate_splits(args.posts, 7).test
            latencies = []
            torch.set_grad_enabled(False)
            for post in (posts * (args.predictions // len(posts) + 1))[: args.predictions]:
                begin = time.perf_counter()
                predict_texts(model, tokenizer, [post.text], thresholds, width)
                latencies.append((time.perf_counter() - begin) * 1000)
        finally:
            client.close()
            if embedded is not None:
                embedded.release()
    test, baseline = record.test_metrics, record.baseline_test_metrics
    print(
        f"trained {args.steps} steps on {args.posts} posts in {train_s:.1f} s; test split "
        f"{record.data_report['test']['POSTS']} posts from held-out templates",
        flush=True,
    )
    result: JsonObject = {
        "bench": "dual_agent",
        "criteria_macro_f1": round(test["test/criteria_matcher/f1"], 4),
        "baseline_criteria_macro_f1": round(baseline["test/criteria_matcher/f1"], 4),
        "evidence_char_f1": round(test["test/evidence_binder/char_f1"], 4),
        "baseline_evidence_char_f1": round(baseline["test/evidence_binder/char_f1"], 4),
        "criteria_macro_auc": round(test["test/criteria_matcher/auc"], 4),
        "baseline_criteria_macro_auc": round(baseline["test/criteria_matcher/auc"], 4),
        "evidence_exact_match": round(test["test/evidence_binder/exact_match"], 4),
        "baseline_evidence_exact_match": round(baseline["test/evidence_binder/exact_match"], 4),
        "predict_p50_ms": round(statistics.median(latencies), 2),
        "predict_p95_ms": round(statistics.quantiles(latencies, n=20)[-1], 2),
        "train_s": round(train_s, 1),
        "steps": args.steps,
        "posts": args.posts,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
