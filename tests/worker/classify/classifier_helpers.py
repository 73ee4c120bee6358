"""The classifier spec the tests train (tiny BERT from scratch, CPU, fixed seed) on a
prepared built-in dataset."""

from __future__ import annotations

from platform_core.json_types import JsonObject

# the built-in botocore dataset, 60 rows per service (900 rows, 15 classes)
DATASET_SPEC: JsonObject = {"source": {"kind": "builtin", "max_per_class": 60}, "seed": 5}


def classifier_spec(dataset_id: str, **train: int | float | str | None) -> JsonObject:
    settings: JsonObject = {
        "max_steps": 300,
        "batch_size": 32,
        "block_size": 64,
        "learning_rate": 5e-3,
        "min_lr": 5e-4,
        "warmup_steps": 20,
        "weight_decay": 0.01,
        "eval_every": 50,
        "checkpoint_every": 50,
        "progress_every_steps": 20,
        "device": "cpu",
        "seed": 0,
    }
    settings.update(train)
    return {
        "model": {"family": "classifier", "preset": "tiny", "dropout": 0.0},
        "classifier": {"dataset_id": dataset_id, "vocab_size": 2000, "latency_samples": 20},
        "train": settings,
        "retention": {"keep_last_n": 2},
    }
