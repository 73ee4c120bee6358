"""bf16 autocast on the CPU against fp32, side by side: seconds per training step of the
classifier family's task through the shared loop (`train_task`: the same spec fields a run
takes, `precision` "fp32" or "bf16", `device` "cpu"), on a BERT shaped like the packaged
MiniLM (6 x 384, 12 heads, 1 536 feed-forward; built from its config, so no download: the
cost of a step does not depend on the weights) with its embeddings and lower
`--frozen` blocks frozen and cached (`classifier.freeze_layers`), batch 32 x 32 tokens.

The two precisions alternate which goes first, repetition by repetition; a figure is the
median over the repetitions of the loop's own seconds per step (its duration over its
steps, two evals over 64 texts included; the cache of the frozen part is computed before
step 0, outside the clock). On a CPU without native bf16 (no AMX and no AVX512-BF16) the
loop refuses bf16 (CONFIG_INVALID) and the script prints `"bf16_speedup": null` with the
reason.

Usage: python bench/cpu_bf16.py [--repeats 3] [--steps 60] [--frozen 3] [--threads 1]
The last line printed is one JSON object: {"bench": "cpu_bf16", "cpu_has_bf16": ...,
"fp32_step_s": ..., "bf16_step_s": ..., "bf16_speedup": ..., ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from platform_core.specs import TrainConfig
from trainer_worker.classify.task import ClassifierTask, TextBatch
from trainer_worker.models.encoder import freeze_lower_layers
from trainer_worker.training.device import DeviceSetup, cpu_has_bf16
from trainer_worker.training.distributed import DistContext
from trainer_worker.training.loop import train_task
from trainer_worker.training.seeding import seed_everything

LABELS = [f"class-{i}" for i in range(15)]  # the built-in dataset's 15 services
ROWS, WIDTH = 2048, 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--frozen", type=int, default=3, help="of the 6 blocks")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    native = cpu_has_bf16()
    timings: dict[str, list[float]] = {"fp32": [], "bf16": []}
    order = ["fp32", "bf16"] if native else ["fp32"]
    for repeat in range(args.repeats):
        for precision in order if repeat % 2 == 0 else order[::-1]:
            step_s = step_seconds(precision, args.steps, args.frozen)
            timings[precision].append(step_s)
            print(f"repeat {repeat + 1}: {precision} {step_s * 1000:.1f} ms a step", flush=True)
    fp32 = statistics.median(timings["fp32"])
    bf16 = statistics.median(timings["bf16"]) if native else None
    print(
        json.dumps(
            {
                "bench": "cpu_bf16",
                "cpu_has_bf16": native,
                "fp32_step_s": round(fp32, 4),
                "bf16_step_s": None if bf16 is None else round(bf16, 4),
                "bf16_speedup": None if bf16 is None else round(fp32 / bf16, 3),
                "reason": None if native else "no AMX or AVX512-BF16: the loop refuses bf16",
                "frozen": args.frozen,
                "threads": args.threads,
                "steps": args.steps,
                "repeats": args.repeats,
            }
        )
    )


def step_seconds(
    precision: str,
    steps: int,
    frozen: int,
    *,
    first_token: bool = True,
    lengths: list[int] | None = None,
    width: int = WIDTH,
    buckets: bool = True,
) -> float:
    """One seeded run of `steps` steps; the loop's own duration over its steps. Every row
    fills `width` tokens unless `lengths` gives the token counts to draw the rows' lengths
    from (bench/length_buckets.py). `first_token` False: the top block computes every token
    (bench/first_token.py); `buckets` False: batches are drawn from all rows, not from one
    length bucket."""
    seed_everything(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=max(512, width),
    )
    config.num_labels = len(LABELS)
    model = BertForSequenceClassification(config)
    freeze_lower_layers(model, frozen)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 30000, (ROWS, width), generator=generator)
    labels = torch.randint(0, len(LABELS), (ROWS,), generator=generator)
    mask = torch.ones_like(ids)
    if lengths is not None:
        drawn = torch.tensor(lengths)[torch.randint(len(lengths), (ROWS,), generator=generator)]
        mask = (torch.arange(width)[None, :] < drawn.clamp(max=width)[:, None]).long()
    train_rows = TextBatch(ids * mask, mask, labels)
    val_rows = TextBatch(ids[:64] * mask[:64], mask[:64], labels[:64])  # evals stay cheap
    kind = ClassifierTask if buckets else _Unbucketed
    task = kind(
        train=train_rows,
        val=val_rows,
        labels=LABELS,
        source=model,
        frozen_layers=frozen,
        first_token=first_token,
    )
    train = TrainConfig(
        block_size=width,
        batch_size=32,
        max_steps=steps,
        learning_rate=1e-3,
        min_lr=1e-4,
        warmup_steps=5,
        eval_every=steps,  # one eval at the end (the step-0 one is before the clock starts)
        checkpoint_every=None,
        early_stopping_patience=None,
        device="cpu",
        precision="bf16" if precision == "bf16" else "fp32",
        seed=0,
    )
    result = train_task(model, task, train)
    return result.duration_s / steps


class _Unbucketed(ClassifierTask):
    """The classifier's task drawing its batches from all rows (no length buckets)."""

    def prepare(
        self, model: nn.Module, config: TrainConfig, *, setup: DeviceSetup, ctx: DistContext
    ) -> None:
        super().prepare(model, config, setup=setup, ctx=ctx)
        self.buckets = None


if __name__ == "__main__":
    main()
