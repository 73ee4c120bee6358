"""What the loop tells its caller, and how: four optional hooks and the values they receive.

The loop knows nothing of Redis, events or storage. The RQ job passes callables that publish
progress, record evals, save checkpoints and read the cancel flag. Under DDP only rank 0
calls them (should_stop's answer is broadcast to the other ranks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from trainer_worker.training.state import TrainState

StopReason = Literal["completed", "early_stopping", "cancelled", "pruned"]
CheckpointReason = Literal["interval", "cancelled", "final"]


@dataclass(frozen=True)
class ProgressInfo:
    step: int  # optimizer updates done
    max_steps: int
    epoch: float  # passes over the training tokens (tokens seen / train tokens)
    loss: float  # training loss of this step, nats per token
    lr: float  # learning rate this step used
    tokens_per_s: float  # global tokens per second since the previous report
    eta_s: float  # seconds left at the run's average step time so far
    elapsed_s: float  # seconds since this call to train() started


@dataclass(frozen=True)
class EvalInfo:
    step: int
    eval_loss: float  # mean holdout loss, nats per token
    perplexity: float  # exp(eval_loss)
    train_loss: float | None  # mean training loss since the previous eval; None at step 0
    # lowest selection score so far, this one included: the eval loss unless the task
    # declares a selection score (`TaskEval.selection`)
    best_eval_loss: float
    improved: bool  # whether this eval beat the previous best by min_delta
    # the task's named metrics (e.g. "val/criteria_matcher/f1"); empty for a language model
    metrics: dict[str, float] = field(default_factory=dict)
    selection: float | None = None  # the task's selection score (lower is better), if any


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    model: nn.Module  # unwrapped from DDP / torch.compile: its state_dict keys are stable
    state: TrainState  # pass back as `resume_from` to continue
    reason: CheckpointReason  # interval, cancelled (keep a final one) or final (run ended)
    # the selection score (holdout loss unless the task declares another) of an eval at
    # this very step; retention keeps the lowest as "best"
    eval_loss: float | None
    is_best: bool  # the latest eval, at this very step, is the best so far


@dataclass(frozen=True)
class Callbacks:
    on_progress: Callable[[ProgressInfo], None] | None = None
    on_eval: Callable[[EvalInfo], None] | None = None
    on_checkpoint: Callable[[CheckpointInfo], None] | None = None
    # polled between steps; True ends the run cooperatively (reason "cancelled")
    should_stop: Callable[[], bool] | None = None
    # a study trial: called with each eval on the training thread; True ends the run there
    # (reason "pruned")
    should_prune: Callable[[EvalInfo], bool] | None = None


@dataclass(frozen=True)
class TrainResult:
    final_step: int
    start_step: int  # 0, or the step a resumed run started from
    # losses[i]: training loss of the update that reached step start_step + i + 1
    losses: list[float] = field(default_factory=list)
    eval_history: list[EvalInfo] = field(default_factory=list)
    tokens_per_s: float = 0.0  # global tokens per second over the whole call
    duration_s: float = 0.0
    stopped_early: bool = False  # early stopping or cancellation
    reason: StopReason = "completed"
    best_eval_loss: float | None = None

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None
