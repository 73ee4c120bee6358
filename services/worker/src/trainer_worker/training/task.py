"""What a model family tells the shared loop: how to draw a training batch, the loss on it,
and how to evaluate (`TrainingTask`).

The loop owns everything else (optimizer, LR schedule, AMP, gradient accumulation,
clipping, checkpoints, resume, early stopping, DDP); a task owns its data and its metrics.
The causal language model is one task (`lm_task.LanguageModelTask`); the dual-agent model
is another (`trainer_worker.dual_agent.task`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch
from torch import Tensor, nn

from platform_core.specs import TrainConfig
from trainer_worker.training.device import DeviceSetup
from trainer_worker.training.distributed import DistContext
from trainer_worker.training.evaluate import AutocastFactory

BatchT = TypeVar("BatchT")


@dataclass(frozen=True)
class TaskEval:
    """One evaluation: the holdout loss, the task's named metrics (e.g.
    `val/criteria_matcher/f1`), which reach the eval event and the run's history, and the
    score early stopping and the best checkpoint are judged by (lower is better, the same on
    every process): the loss unless the task declares another in `selection`."""

    loss: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    # e.g. 1 - validation accuracy for a classifier; None = judge by `loss`
    selection: float | None = None

    @property
    def score(self) -> float:
        return self.loss if self.selection is None else self.selection


class TrainingTask(Protocol[BatchT]):
    @property
    def train_tokens(self) -> int:
        """Tokens in one pass over the training data (progress reports it in epochs)."""
        ...

    @property
    def has_eval(self) -> bool:
        """Whether the task holds a holdout to evaluate on."""
        ...

    def prepare(
        self, model: nn.Module, config: TrainConfig, *, setup: DeviceSetup, ctx: DistContext
    ) -> None:
        """Check the data against `model` (already on its device) and `config`, and build
        the eval batches; raises DATA_INVALID / CONFIG_INVALID. Called once, before step 0."""
        ...

    def get_batch(
        self,
        config: TrainConfig,
        generator: torch.Generator,
        device: torch.device,
        ctx: DistContext,
    ) -> BatchT:
        """One micro-batch of this process, drawn with `generator` (checkpointed with the
        run, so a resumed run draws the batches the uninterrupted one would have)."""
        ...

    def loss(self, model: nn.Module, batch: BatchT) -> Tensor:
        """Forward `batch` through `model` and return the scalar training loss (called
        inside autocast; compute the loss itself in fp32)."""
        ...

    def evaluate(
        self,
        model: nn.Module,
        device: torch.device,
        autocast: AutocastFactory,
        ctx: DistContext,
    ) -> TaskEval:
        """Loss and metrics on the holdout, in eval mode, reduced over every process."""
        ...
