"""Launched by torchrun from test_distributed_training.py: trains the tiny GPT-2 on byte ids
and writes this rank's losses, evals and callback counts to <out_dir>/rank<R>.json.

Usage: python -m torch.distributed.run --nproc_per_node=2 ddp_train_script.py OUT_DIR BATCH
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch.distributed as dist

from platform_core.specs import ModelSpec, TrainConfig
from tests.worker.train_helpers import train_eval_split
from trainer_worker.models.registry import build_model
from trainer_worker.training.callbacks import (
    Callbacks,
    CheckpointInfo,
    EvalInfo,
    ProgressInfo,
    TrainResult,
)
from trainer_worker.training.loop import train
from trainer_worker.training.seeding import seed_everything

# dropout 0: replicas must compute exactly what one process with the whole batch computes
SPEC = ModelSpec(family="gpt2", preset="tiny", dropout=0.0)


def config(batch_size: int) -> TrainConfig:
    return TrainConfig(
        block_size=32,
        batch_size=batch_size,
        max_steps=6,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=2,
        eval_every=3,
        eval_batches=2,
        progress_every_steps=2,
        device="cpu",
        seed=21,
    )


@dataclass
class CallCounts:
    """How often the loop called each hook in this process."""

    progress: int = 0
    eval: int = 0
    checkpoint: int = 0
    should_stop: int = 0

    def on_progress(self, _: ProgressInfo) -> None:
        self.progress += 1

    def on_eval(self, _: EvalInfo) -> None:
        self.eval += 1

    def on_checkpoint(self, _: CheckpointInfo) -> None:
        self.checkpoint += 1

    def poll_stop(self) -> bool:
        self.should_stop += 1
        return False  # counts the polls, never stops


def run(batch_size: int) -> tuple[TrainResult, dict[str, int]]:
    train_ids, eval_ids = train_eval_split(20_000)
    seed_everything(0)
    model = build_model(SPEC, 256, eos_id=10)
    counts = CallCounts()
    callbacks = Callbacks(
        on_progress=counts.on_progress,
        on_eval=counts.on_eval,
        on_checkpoint=counts.on_checkpoint,
        should_stop=counts.poll_stop,
    )
    return train(model, train_ids, eval_ids, config(batch_size), callbacks), asdict(counts)


def main() -> None:
    out_dir, batch_size = Path(sys.argv[1]), int(sys.argv[2])
    result, calls = run(batch_size)
    rank = int(os.environ.get("RANK", "0"))
    report = {
        "rank": rank,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "group_left": not dist.is_initialized(),
        "losses": result.losses,
        "evals": [e.eval_loss for e in result.eval_history],
        "calls": calls,
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main()
