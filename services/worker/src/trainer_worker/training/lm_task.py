"""The causal language model as a training task: random windows of a 1-D token stream,
cross-entropy on the next token, holdout loss (perplexity is the loop's exp of it)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import TrainConfig
from trainer_worker.models.registry import require_vocab
from trainer_worker.training.data import check_token_ids, eval_loader, get_batch
from trainer_worker.training.device import DeviceSetup
from trainer_worker.training.distributed import DistContext, all_reduce_sum
from trainer_worker.training.evaluate import (
    AutocastFactory,
    estimate_loss,
    forward_logits,
    lm_loss,
    output_vocab_size,
)
from trainer_worker.training.task import TaskEval

LMBatch = tuple[Tensor, Tensor]  # x (B, T), y = x shifted left by one (B, T)


class LanguageModelTask:
    """`TrainingTask[LMBatch]` over `train_ids` and an optional holdout `eval_ids`."""

    def __init__(self, train_ids: Tensor, eval_ids: Tensor | None) -> None:
        self.train_ids = train_ids
        self.eval_ids = eval_ids
        self.eval_batches: DataLoader[LMBatch] | None = None

    @property
    def train_tokens(self) -> int:
        return self.train_ids.numel()

    @property
    def has_eval(self) -> bool:
        return self.eval_ids is not None

    def prepare(
        self, model: nn.Module, config: TrainConfig, *, setup: DeviceSetup, ctx: DistContext
    ) -> None:
        check_token_ids(self.train_ids, "train_ids", config.block_size + 1)
        if self.eval_ids is not None:
            check_token_ids(self.eval_ids, "eval_ids", 2)
        max_id = int(self.train_ids.max())
        if self.eval_ids is not None:
            max_id = max(max_id, int(self.eval_ids.max()))
        require_vocab(output_vocab_size(model, ctx.device), max_id)
        if self.eval_ids is not None:
            self.eval_batches = eval_loader(
                self.eval_ids,
                config.block_size,
                config.batch_size,
                config.eval_batches,
                rank=ctx.rank,
                world_size=ctx.world_size,
                num_workers=setup.num_workers,
                pin_memory=setup.pin_memory,
                seed=config.seed,
            )

    def get_batch(
        self,
        config: TrainConfig,
        generator: torch.Generator,
        device: torch.device,
        ctx: DistContext,
    ) -> LMBatch:
        return get_batch(
            self.train_ids,
            config.block_size,
            config.batch_size,
            generator,
            device,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )

    def loss(self, model: nn.Module, batch: LMBatch) -> Tensor:
        x, y = batch
        logits = forward_logits(model, x)  # (B, T, V)
        return lm_loss(logits, y)

    def evaluate(
        self,
        model: nn.Module,
        device: torch.device,
        autocast: AutocastFactory,
        ctx: DistContext,
    ) -> TaskEval:
        if self.eval_batches is None:
            raise AppError(ErrorCode.INTERNAL, "evaluate called before prepare or without eval")
        part = estimate_loss(model, self.eval_batches, device, autocast)
        total, tokens = all_reduce_sum([part.total_nats, float(part.tokens)], ctx)
        return TaskEval(loss=total / tokens)
