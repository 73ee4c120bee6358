"""Everything besides the weights that a resumed run needs to continue bit-for-bit.

`TrainState` holds the optimizer moments, the GradScaler, the step (the LR schedule is a
pure function of it), every RNG, the tokens seen, the early-stopping bookkeeping and, with
`train.ema_decay`, the live weights (the checkpoint's model weights are then their average). The
caller stores `state_dict()` next to the model's own state dict (plain tensors and Python
scalars: `torch.load(weights_only=True)` reads it back) and passes
`TrainState.from_state_dict(...)` as `resume_from` after loading the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from platform_core.errors import AppError, ErrorCode
from trainer_worker.training.seeding import RngState, capture_rng_state

STATE_VERSION = 1  # bump when the layout changes; older checkpoints are then refused


@dataclass(frozen=True)
class TrainState:
    step: int  # optimizer updates done; the next update uses get_lr(step)
    optimizer: dict[str, object]  # AdamW state_dict (tensors shared with the live optimizer)
    scaler: dict[str, object] | None  # GradScaler state_dict; None when fp16 is not in use
    rng: RngState  # rank 0's generators at `step`
    tokens_seen: int  # global tokens consumed so far (epochs = tokens_seen / train tokens)
    best_eval_loss: float | None  # lowest selection score (holdout loss) seen; None before any eval
    evals_without_improvement: int  # early-stopping counter
    # with train.ema_decay: the trainable weights training goes on from (the checkpoint's
    # model weights are their moving average); None otherwise
    live_weights: dict[str, Tensor] | None = None

    def state_dict(self) -> dict[str, object]:
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "optimizer": self.optimizer,
            "scaler": self.scaler,
            "rng": self.rng.state_dict(),
            "tokens_seen": self.tokens_seen,
            "best_eval_loss": self.best_eval_loss,
            "evals_without_improvement": self.evals_without_improvement,
            "live_weights": self.live_weights,
        }

    @staticmethod
    def from_state_dict(state: dict[str, object]) -> TrainState:
        if state.get("version") != STATE_VERSION:
            raise AppError(
                ErrorCode.CHECKPOINT_CORRUPT,
                f"training state version {state.get('version')!r} is not {STATE_VERSION}",
            )
        step, optimizer, scaler = state.get("step"), state.get("optimizer"), state.get("scaler")
        rng, tokens = state.get("rng"), state.get("tokens_seen")
        best, bad = state.get("best_eval_loss"), state.get("evals_without_improvement")
        live = state.get("live_weights")  # absent from a checkpoint older than ema_decay
        if not (
            isinstance(step, int)
            and step >= 0
            and isinstance(optimizer, dict)
            and (scaler is None or isinstance(scaler, dict))
            and isinstance(rng, dict)
            and isinstance(tokens, int)
            and (best is None or isinstance(best, float))
            and isinstance(bad, int)
            and (
                live is None
                or (isinstance(live, dict) and all(isinstance(t, Tensor) for t in live.values()))
            )
        ):
            raise AppError(ErrorCode.CHECKPOINT_CORRUPT, "training state is malformed")
        return TrainState(
            step=step,
            optimizer={str(k): v for k, v in optimizer.items()},
            scaler=None if scaler is None else {str(k): v for k, v in scaler.items()},
            rng=RngState.from_state_dict({str(k): v for k, v in rng.items()}),
            tokens_seen=tokens,
            best_eval_loss=best,
            evals_without_improvement=bad,
            live_weights=None if live is None else {str(k): t for k, t in live.items()},
        )


def capture_train_state(
    *,
    step: int,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    sampler: torch.Generator,
    tokens_seen: int,
    best_eval_loss: float | None,
    evals_without_improvement: int,
    live_weights: dict[str, Tensor] | None = None,
) -> TrainState:
    """Snapshot at a step boundary. The optimizer tensors are shared, not copied: save them
    before the next step (the loop's callbacks run while training is paused)."""
    return TrainState(
        step=step,
        optimizer=optimizer.state_dict(),
        scaler=scaler.state_dict() if scaler.is_enabled() else None,
        rng=capture_rng_state(sampler),
        tokens_seen=tokens_seen,
        best_eval_loss=best_eval_loss,
        evals_without_improvement=evals_without_improvement,
        live_weights=live_weights,
    )
