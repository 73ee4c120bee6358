"""Launched by torchrun from test_distributed_training.py: trains a small BERT classifier
with its lower 2 of 3 blocks frozen (the cached prefix under the first-token top block) on
length-bucketed batches, and writes this rank's losses and evals to <out_dir>/rank<R>.json.

Usage: python -m torch.distributed.run --nproc_per_node=2 -m
       tests.worker.classify.ddp_classifier_script OUT_DIR BATCH
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from platform_core.json_types import JsonObject, JsonValue
from platform_core.specs import TrainConfig
from tests.worker.classify.tiny_bert import LABELS, padded_rows, tiny_bert
from trainer_worker.classify.task import ClassifierTask
from trainer_worker.models.encoder import freeze_lower_layers
from trainer_worker.training.loop import train_task
from trainer_worker.training.seeding import seed_everything

WIDTH = 16


def run(batch_size: int) -> JsonObject:
    seed_everything(0)
    # dropout 0: replicas must compute what one process with the whole batch computes
    model = tiny_bert(width=WIDTH, dropout=0.0)
    freeze_lower_layers(model, 2)
    task = ClassifierTask(
        train=padded_rows(512, 1, width=WIDTH),
        val=padded_rows(48, 2, width=WIDTH),
        labels=LABELS,
        source=model,
        frozen_layers=2,
    )
    train = TrainConfig(
        block_size=WIDTH,
        batch_size=batch_size,
        max_steps=8,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=2,
        eval_every=4,
        checkpoint_every=None,
        device="cpu",
        seed=21,
    )
    result = train_task(model, task, train)
    prefix = task.prefix
    losses: list[JsonValue] = list(result.losses)
    evals: list[JsonValue] = [e.eval_loss for e in result.eval_history]
    return {
        "losses": losses,
        "evals": evals,
        "first_token": prefix is not None and prefix.first_token,
        "cached": task.train.states is not None,
        "buckets": task.buckets is not None,
    }


def main() -> None:
    out_dir, batch_size = Path(sys.argv[1]), int(sys.argv[2])
    report = run(batch_size)
    rank = int(os.environ.get("RANK", "0"))
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main()
