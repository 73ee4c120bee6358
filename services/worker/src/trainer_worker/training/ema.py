"""An exponential moving average of the trainable weights (`train.ema_decay`).

After every optimizer update the average moves toward the live weights:
`average += (1 - d) * (live - average)`, with `d = min(ema_decay, (1 + step) / (10 + step))`,
so the first steps (far from anything worth keeping) fade fast. The average is what the run
is: evaluations, early stopping and "best" judge it, checkpoints save it as the model's
weights (the live ones ride in the training state so that a resume continues bit-for-bit),
and when training ends it replaces the live weights in the model the caller holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from platform_core.errors import AppError, ErrorCode


class WeightAverage:
    """The moving average of `model`'s trainable parameters (frozen ones never change)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self.params: list[Tensor] = [p for _, p in named]
        with torch.no_grad():
            self.average = [p.detach().clone() for p in self.params]

    def decay_at(self, step: int) -> float:
        """The decay of the update that reached `step` (1 for the first update)."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the live weights after the update that reached `step`."""
        if self.params:
            live = [p.detach() for p in self.params]
            torch._foreach_lerp_(self.average, live, 1.0 - self.decay_at(step))

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """The model holds the average inside, the live weights again after."""
        with torch.no_grad():
            live = [p.detach().clone() for p in self.params]
            torch._foreach_copy_(self.params, self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, live)

    @torch.no_grad()
    def apply(self) -> None:
        """The model keeps the average for good (training has ended)."""
        torch._foreach_copy_(self.params, self.average)

    def live_weights(self) -> dict[str, Tensor]:
        """A copy of the live trainable weights by name (the parameters themselves hold the
        average while a checkpoint is taken)."""
        with torch.no_grad():
            return {
                name: p.detach().clone() for name, p in zip(self.names, self.params, strict=True)
            }


@torch.no_grad()
def load_live_weights(model: nn.Module, live: dict[str, Tensor]) -> None:
    """Put a checkpoint's live weights back into `model` (which holds the checkpoint's
    averaged ones); CHECKPOINT_CORRUPT when they do not match its trainable parameters."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(live) != set(params) or any(live[n].shape != p.shape for n, p in params.items()):
        missing, extra = sorted(set(params) - set(live)), sorted(set(live) - set(params))
        raise AppError(
            ErrorCode.CHECKPOINT_CORRUPT,
            "the checkpoint's live weights do not match the model's trainable parameters "
            f"(missing {missing[:3]}, unexpected {extra[:3]}, or a shape differs)",
        )
    for name, p in params.items():
        p.copy_(live[name])
