"""The dual-agent spec the tests train (tiny encoder, generated posts, CPU, fixed seed)."""

from __future__ import annotations

from platform_core.json_types import JsonObject


def dual_agent_spec(**train: int | float | str | None) -> JsonObject:
    settings: JsonObject = {
        "max_steps": 300,
        "batch_size": 16,
        "block_size": 64,
        "learning_rate": 4e-3,
        "min_lr": 4e-4,
        "warmup_steps": 20,
        "weight_decay": 0.01,
        "eval_every": 100,
        "eval_batches": 4,
        "checkpoint_every": 100,
        "progress_every_steps": 10,
        "device": "cpu",
        "seed": 0,
    }
    settings.update(train)
    return {
        "model": {"family": "dual_agent", "preset": "tiny", "dropout": 0.0},
        "dual_agent": {"generated_posts": 600, "split_seed": 7, "vocab_size": 1000},
        "train": settings,
        "retention": {"keep_last_n": 2},
    }
