"""Steady-state tokens/s of the worker's `train_model` job against a bare PyTorch loop on the
same model, batches and dtype (issue 3's benchmark), for GPT-2 tiny and Char-LSTM on the CPU,
and (issue 12) the dual-agent model's job against a bare loop on the same encoder and posts.

The job runs for real: enqueued on Redis, taken by an in-process RQ SimpleWorker, with its
heartbeat thread, run state, progress events on the bus, eval history and callbacks; only
interval checkpoints are off (`checkpoint_every=None`). Its throughput is read from its own
progress events: the tokens trained between the first progress event after warm-up and the
last one before the final eval, over the time between the two events (each event's time is
taken on the training thread when its step ends). The bare loop (below, ~50 lines:
get_batch, forward, loss, backward, clip, AdamW step, the same LR schedule) is timed over
the same steps. The two alternate which goes first, repetition by repetition; a ratio is
the median of the repetitions' paired ratios (the best-of ratio, best job over best bare
loop, is printed beside it). One job of each case runs first, unmeasured: what a worker pays
once (MLflow's import and its store's tables when tracking is on, as it is by default;
torch's first allocations) is not a repetition's figure. Char-LSTM's steps take a few
milliseconds, so it runs `steps_scale` times the steps: its timed window then lasts about a
second, not 0.2 s that a single scheduler hiccup on a shared machine would swing by several
percent.

On a CUDA device the script then runs GPT-2 124M in bf16 with torch.compile through the same
job and prints its tokens/s and its model FLOPs utilisation against the bf16 matrix-multiply
peak it measures on that device.

Usage: python bench/train_overhead.py [--repeats 5] [--steps 80] [--only lm|dual_agent]
Redis: REDIS_URL when set, else the project's embedded redis-server under a temp data root.
The last line printed is one JSON object with the figures issue 3 names.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from pydoc_data.topics import topics
from typing import Literal

import redis
import torch
import torch.nn.functional as F
from rq import Queue, SimpleWorker

from platform_core.event_bus import EventBus
from platform_core.events import MetricsProgress
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.queue import TRAINING_QUEUE, enqueue_job
from platform_core.redis_connection import resolve_redis_url
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.settings import load_settings
from platform_core.specs import (
    CorpusOptions,
    DualAgentOptions,
    ModelFamily,
    ModelSpec,
    TrainConfig,
)
from trainer_worker.data.corpus import corpus_spec, load_corpus
from trainer_worker.dual_agent.encoding import encode_posts
from trainer_worker.dual_agent.model import DUAL_AGENT_PRESETS, DualAgentModel, build_encoder
from trainer_worker.dual_agent.run import dual_pos_weight
from trainer_worker.dual_agent.sources import load_splits
from trainer_worker.dual_agent.tokenizer import train_wordpiece
from trainer_worker.models.registry import build_model
from trainer_worker.tokenizers.artifacts import load_tokenizer
from trainer_worker.training.data import get_batch
from trainer_worker.training.evaluate import forward_logits, lm_loss
from trainer_worker.training.prepare import configure_optimizer
from trainer_worker.training.schedule import get_lr
from trainer_worker.training.seeding import seed_everything

CPU = torch.device("cpu")
WARMUP_STEPS = 10  # steps before the timed window: allocator, autograd graph, eval at step 0
PROGRESS_EVERY = 10  # the job's progress events, one per this many steps (the default)


@dataclass(frozen=True)
class Case:
    family: ModelFamily
    tokenizer: JsonObject  # train_tokenizer spec
    batch_size: int
    block_size: int
    preset: str = "tiny"
    device: Literal["cpu", "cuda"] = "cpu"
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    steps_scale: int = 1  # this case runs steps_scale x --steps: fast steps, longer window


CASES = (
    Case("gpt2", {"kind": "bpe", "vocab_size": 512}, batch_size=8, block_size=64),
    Case("char_lstm", {"kind": "char"}, batch_size=16, block_size=64, steps_scale=5),
)
# on a CUDA device: GPT-2 124M (the 124M shape over a 512-token BPE vocabulary) in bf16 with
# torch.compile; its tokens/s and model FLOPs utilisation against the measured bf16 peak
GPU_CASE = Case(
    "gpt2",
    {"kind": "bpe", "vocab_size": 512},
    batch_size=16,
    block_size=1024,
    preset="124M",
    device="cuda",
    precision="bf16",
    compile=True,
)


def train_config(case: Case, steps: int) -> TrainConfig:
    return TrainConfig(
        max_steps=steps,
        batch_size=case.batch_size,
        block_size=case.block_size,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=5,
        eval_every=steps,  # evals at step 0 and at the end only: outside the timed window
        eval_batches=2,
        checkpoint_every=None,  # only the final save, after the timed window
        progress_every_steps=PROGRESS_EVERY,
        progress_every_s=86_400.0,  # the most allowed: progress by step count, as the loop is timed
        device=case.device,
        precision=case.precision,
        compile=case.compile,
        seed=11,
    )


def window(steps: int) -> tuple[int, int]:
    """The timed steps: after warm-up, before the final step's eval and save."""
    return WARMUP_STEPS, steps - PROGRESS_EVERY


def job_tokens_per_s(
    client: redis.Redis, case: Case, tokenizer_id: str, steps: int, run_id: str
) -> float:
    spec: JsonObject = {
        "model": {"family": case.family, "preset": case.preset},
        "tokenizer_id": tokenizer_id,
        "corpus": {"path": "corpus.txt"},
        "train": json.loads(json.dumps(train_config(case, steps).to_dict())),
        "sample_max_new_tokens": 1,
    }
    return timed_job(client, spec, case, steps, run_id)


def timed_job(client: redis.Redis, spec: JsonObject, case: Case, steps: int, run_id: str) -> float:
    """Run `spec` as the real job; tokens per second between its progress events."""
    enqueue_job(client, "train_model", run_id, spec)
    SimpleWorker([Queue(TRAINING_QUEUE, connection=client)], connection=client).work(burst=True)
    store = RunStateStore(client)
    if store.status(run_id) is not RunStatus.COMPLETED:
        raise RuntimeError(f"{run_id}: {store.status(run_id)}: {store.message(run_id)}")
    stamps = {
        d.event.payload.step: d.event.ts.timestamp()
        for d in EventBus(client).read(count=1_000_000)
        if isinstance(d.event, MetricsProgress) and d.event.run_id == run_id
    }
    first, last = window(steps)
    tokens = (last - first) * case.batch_size * case.block_size
    return tokens / (stamps[last] - stamps[first])


def bare_tokens_per_s(data_root: Path, case: Case, tokenizer_id: str, steps: int) -> float:
    """A plain PyTorch loop on the same model, batches and dtype, timed over the window."""
    config = train_config(case, steps)
    tokenizer = load_tokenizer(DataLayout(data_root).tokenizer_dir(tokenizer_id))
    corpus = load_corpus(corpus_spec(CorpusOptions(path="corpus.txt")), data_root)
    ids = torch.tensor(tokenizer.encode(corpus.train_text), dtype=torch.long)  # (N,)
    seed_everything(config.seed)
    spec = ModelSpec(family=case.family, preset="tiny")
    model = build_model(spec, tokenizer.vocab_size, tokenizer.eos_id)
    model.train()
    optimizer = configure_optimizer(model, config, CPU)
    generator = torch.Generator().manual_seed(config.seed)
    first, last = window(steps)
    started = 0.0
    for step in range(last):
        if step == first:
            started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = get_lr(step, config)
        x, y = get_batch(ids, config.block_size, config.batch_size, generator, CPU)  # (B, T)
        loss = lm_loss(forward_logits(model, x), y)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # the loss a script would print; also where the job checks for NaN
    tokens = (last - first) * case.batch_size * case.block_size
    return tokens / (time.perf_counter() - started)


def train_tokenizer(client: redis.Redis, case: Case) -> str:
    tokenizer_id = f"tok-{case.family}-{case.device}"
    spec: JsonObject = {**case.tokenizer, "corpus": {"path": "corpus.txt"}}
    enqueue_job(client, "train_tokenizer", tokenizer_id, spec)
    SimpleWorker([Queue(TRAINING_QUEUE, connection=client)], connection=client).work(burst=True)
    if RunStateStore(client).status(tokenizer_id) is not RunStatus.COMPLETED:
        raise RuntimeError(f"{tokenizer_id}: {RunStateStore(client).message(tokenizer_id)}")
    return tokenizer_id


def measure(client: redis.Redis, data_root: Path, repeats: int, base_steps: int) -> JsonObject:
    figures: JsonObject = {}
    for case in CASES:
        tokenizer_id = train_tokenizer(client, case)
        job: list[float] = []
        bare: list[float] = []
        steps = base_steps * case.steps_scale
        job_tokens_per_s(client, case, tokenizer_id, steps, f"{case.family}-warm-up")
        for rep in range(repeats):
            run_id = f"{case.family}-{rep}"
            if rep % 2:
                job.append(job_tokens_per_s(client, case, tokenizer_id, steps, run_id))
                bare.append(bare_tokens_per_s(data_root, case, tokenizer_id, steps))
            else:
                bare.append(bare_tokens_per_s(data_root, case, tokenizer_id, steps))
                job.append(job_tokens_per_s(client, case, tokenizer_id, steps, run_id))
        ratios = [j / b for j, b in zip(job, bare, strict=True)]
        ratio = statistics.median(ratios)
        best_ratio = max(job) / max(bare)
        print(
            f"{case.family} ({steps} steps): job {statistics.median(job):,.0f} tokens/s, bare "
            f"loop {statistics.median(bare):,.0f} tokens/s, ratio {ratio:.3f} "
            f"(per repetition: {', '.join(f'{r:.3f}' for r in ratios)}; best-of {best_ratio:.3f})",
            flush=True,
        )
        figures[f"{case.family}_ratio"] = round(ratio, 3)
        figures[f"{case.family}_best_of_ratio"] = round(best_ratio, 3)
        figures[f"{case.family}_steps"] = steps
        figures[f"{case.family}_tokens_per_s"] = round(statistics.median(job), 1)
        figures[f"{case.family}_bare_tokens_per_s"] = round(statistics.median(bare), 1)
    return figures


# the dual-agent case: a tiny encoder from scratch on generated posts, 16 posts x 64 tokens
DUAL_OPTIONS = DualAgentOptions(generated_posts=600, split_seed=7, vocab_size=1000)
DUAL_CASE = Case("dual_agent", {}, batch_size=16, block_size=64)


def dual_job_tokens_per_s(client: redis.Redis, steps: int, run_id: str) -> float:
    """The real train_model job on a dual_agent spec; (padded) tokens per second."""
    spec: JsonObject = {
        "model": {"family": "dual_agent", "preset": "tiny"},
        "dual_agent": json.loads(DUAL_OPTIONS.model_dump_json()),
        "train": json.loads(json.dumps(train_config(DUAL_CASE, steps).to_dict())),
    }
    return timed_job(client, spec, DUAL_CASE, steps, run_id)


def dual_bare_tokens_per_s(data_root: Path, steps: int) -> float:
    """A plain PyTorch loop on the same model and batches: random posts, the joint loss
    (BCE with the same positive weights + the mean of the start / end cross-entropies),
    clip, AdamW, the same LR schedule."""
    config = train_config(DUAL_CASE, steps)
    splits = load_splits(DUAL_OPTIONS, data_root).splits
    with tempfile.TemporaryDirectory() as scratch:
        texts = [post.text for post in splits.train]
        tokenizer = train_wordpiece(texts, DUAL_OPTIONS.vocab_size, Path(scratch))
    train = encode_posts(tokenizer, splits.train, config.block_size)
    pos_weight = dual_pos_weight(train)
    seed_everything(config.seed)
    pad = tokenizer.pad_token_id or 0
    encoder = build_encoder(DUAL_AGENT_PRESETS["tiny"], len(tokenizer), pad, None)
    model = DualAgentModel(encoder, "sigmoid")
    model.train()
    optimizer = configure_optimizer(model, config, CPU)
    generator = torch.Generator().manual_seed(config.seed)
    first, last = window(steps)
    started = 0.0
    for step in range(last):
        if step == first:
            started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = get_lr(step, config)
        ix = torch.randint(len(train), (config.batch_size,), generator=generator)
        criteria, start, end = model(train.input_ids[ix], train.attention_mask[ix])
        loss = F.binary_cross_entropy_with_logits(
            criteria.float(), train.labels[ix], pos_weight=pos_weight
        ) + 0.5 * (F.cross_entropy(start, train.start[ix]) + F.cross_entropy(end, train.end[ix]))
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
    tokens = (last - first) * config.batch_size * config.block_size
    return tokens / (time.perf_counter() - started)


def measure_dual(client: redis.Redis, data_root: Path, repeats: int, steps: int) -> JsonObject:
    job: list[float] = []
    bare: list[float] = []
    dual_job_tokens_per_s(client, steps, "dual-warm-up")
    for rep in range(repeats):
        if rep % 2:
            job.append(dual_job_tokens_per_s(client, steps, f"dual-{rep}"))
            bare.append(dual_bare_tokens_per_s(data_root, steps))
        else:
            bare.append(dual_bare_tokens_per_s(data_root, steps))
            job.append(dual_job_tokens_per_s(client, steps, f"dual-{rep}"))
    ratios = [j / b for j, b in zip(job, bare, strict=True)]
    ratio = statistics.median(ratios)
    print(
        f"dual_agent ({steps} steps): job {statistics.median(job):,.0f} tokens/s, bare loop "
        f"{statistics.median(bare):,.0f} tokens/s, ratio {ratio:.3f} "
        f"(per repetition: {', '.join(f'{r:.3f}' for r in ratios)})",
        flush=True,
    )
    return {
        "dual_agent_ratio": round(ratio, 3),
        "dual_agent_best_of_ratio": round(max(job) / max(bare), 3),
        "dual_agent_tokens_per_s": round(statistics.median(job), 1),
        "dual_agent_bare_tokens_per_s": round(statistics.median(bare), 1),
    }


def bf16_matmul_peak_flops(size: int = 8192, repeats: int = 20) -> float:
    """The device's bf16 matrix-multiply rate, measured: the denominator of MFU."""
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        torch.matmul(a, b)  # warm-up: kernel selection and clocks
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def gpu_figures(client: redis.Redis, steps: int) -> JsonObject:
    """GPT-2 124M, bf16, torch.compile through the real job: tokens/s and MFU (the model's
    FLOPs per token, 6N plus attention, as in nanoGPT's estimate, times tokens/s, over the
    measured bf16 peak)."""
    case = GPU_CASE
    tokens_per_s = job_tokens_per_s(client, case, train_tokenizer(client, case), steps, "gpu-124m")
    spec = ModelSpec(family="gpt2", preset="124M")
    params = sum(p.numel() for p in build_model(spec, 512, 0).parameters())
    layers, width = 12, 768  # the 124M shape (platform_core.specs presets)
    flops_per_token = 6 * params + 12 * layers * width * case.block_size
    peak = bf16_matmul_peak_flops()
    mfu = flops_per_token * tokens_per_s / peak
    print(
        f"gpu: GPT-2 124M bf16 compiled {tokens_per_s:,.0f} tokens/s, {params / 1e6:.1f}M "
        f"params, bf16 peak {peak / 1e12:.0f} TFLOP/s measured, MFU {mfu:.1%}",
        flush=True,
    )
    return {
        "gpu_124m_tokens_per_s": round(tokens_per_s, 1),
        "gpu_mfu": round(mfu, 4),
        "gpu_bf16_peak_tflops": round(peak / 1e12, 1),
        "gpu_name": torch.cuda.get_device_name(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="paired runs per model")
    parser.add_argument("--steps", type=int, default=80, help="training steps per run")
    parser.add_argument(
        "--only", choices=["lm", "dual_agent"], help="only the language models, or only dual_agent"
    )
    args = parser.parse_args()
    if args.steps < WARMUP_STEPS + 2 * PROGRESS_EVERY:
        parser.error(f"--steps must be at least {WARMUP_STEPS + 2 * PROGRESS_EVERY}")
    if args.steps % PROGRESS_EVERY:
        parser.error(f"--steps must be a multiple of {PROGRESS_EVERY}")
    logging.getLogger("rq").setLevel(logging.WARNING)  # no per-job lines from the worker
    with tempfile.TemporaryDirectory(prefix="train-overhead-") as folder:
        data_root = Path(folder)
        text = "\n\n".join(topics[key] for key in sorted(topics))
        (data_root / "corpus.txt").write_text(text, encoding="utf-8")
        os.environ["APP__DATA_ROOT"] = str(data_root)
        url, embedded = resolve_redis_url(os.environ.get("REDIS_URL"), data_root)
        client = redis.Redis.from_url(url)
        try:
            figures: JsonObject = {}
            if args.only != "dual_agent":
                figures.update(measure(client, data_root, args.repeats, args.steps))
            if args.only != "lm":
                figures.update(measure_dual(client, data_root, args.repeats, args.steps))
            if torch.cuda.is_available() and args.only is None:
                figures.update(gpu_figures(client, args.steps))
        finally:
            client.close()
            if embedded is not None:
                embedded.release()
    headline = (
        "gpt2_ratio",
        "char_lstm_ratio",
        "gpt2_best_of_ratio",
        "char_lstm_best_of_ratio",
        "gpt2_tokens_per_s",
        "char_lstm_tokens_per_s",
        "gpt2_bare_tokens_per_s",
        "char_lstm_bare_tokens_per_s",
    )
    result: JsonObject = {
        "bench": "train_overhead",
        **{key: figures[key] for key in headline if key in figures},
        **{key: value for key, value in figures.items() if key.startswith("dual_agent_")},
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "tracking": load_settings().tracking.enabled,
        "load_average": round(os.getloadavg()[0], 2),
        **{key: value for key, value in figures.items() if key.startswith("gpu_")},
        "repeats": args.repeats,
        "steps": args.steps,
        **({"char_lstm_steps": figures["char_lstm_steps"]} if "char_lstm_steps" in figures else {}),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
