"""Learning-rate schedule: linear warmup, then cosine decay to a floor (nanoGPT's `get_lr`).

A pure function of the step, so a resumed run needs nothing but its step to continue the
schedule exactly where it stopped.
"""

from __future__ import annotations

import math

from platform_core.specs import TrainConfig


def get_lr(step: int, config: TrainConfig) -> float:
    """Learning rate for the optimizer update that takes the model from `step` to `step + 1`."""
    return cosine_lr(
        step,
        learning_rate=config.learning_rate,
        min_lr=config.min_lr,
        warmup_steps=config.warmup_steps,
        decay_steps=config.decay_steps,
    )


def cosine_lr(
    step: int, *, learning_rate: float, min_lr: float, warmup_steps: int, decay_steps: int
) -> float:
    # 1) linear warmup; (step + 1) so the very first update already moves the weights
    if step < warmup_steps:
        return learning_rate * (step + 1) / (warmup_steps + 1)
    # 2) past the decay horizon, hold the floor
    if step >= decay_steps:
        return min_lr
    # 3) in between, cosine from learning_rate down to min_lr
    decay_ratio = (step - warmup_steps) / (decay_steps - warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # 1 -> 0
    return min_lr + coeff * (learning_rate - min_lr)
