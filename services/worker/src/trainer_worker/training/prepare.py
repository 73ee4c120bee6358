"""Everything the training loop needs before its first step, gathered in one place.

`prepare_run` validates the data against the model, seeds every generator, moves the model
to its device, wraps it (torch.compile, DDP), builds AdamW, the GradScaler, the autocast
context and the holdout batches, and restores a checkpoint's state when resuming. The
resulting `PreparedRun` also carries the loop's bookkeeping.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import TrainConfig
from trainer_worker.models.registry import context_size, require_vocab
from trainer_worker.training.callbacks import EvalInfo
from trainer_worker.training.data import check_token_ids, eval_loader
from trainer_worker.training.device import DeviceSetup
from trainer_worker.training.distributed import DistContext, wrap_model
from trainer_worker.training.evaluate import AutocastFactory, output_vocab_size
from trainer_worker.training.seeding import make_generator, restore_rng_state, seed_everything
from trainer_worker.training.state import TrainState


@dataclass
class PreparedRun:
    """What the loop works with, plus its mutable bookkeeping (step, evals, losses)."""

    raw_model: nn.Module  # the caller's module: what checkpoints save
    fwd_model: nn.Module  # raw_model, or its torch.compile wrapper
    train_model: nn.Module  # fwd_model, or DDP around it
    optimizer: torch.optim.AdamW
    scaler: torch.amp.GradScaler
    sampler: torch.Generator
    autocast: AutocastFactory
    eval_batches: DataLoader[tuple[Tensor, Tensor]] | None
    device: torch.device
    step: int
    tokens_seen: int
    best_eval_loss: float | None
    evals_without_improvement: int
    start_step: int = 0
    start_tokens: int = 0
    last_eval_loss: float | None = None
    last_eval_step: int | None = None
    losses: list[float] = field(default_factory=list)
    eval_history: list[EvalInfo] = field(default_factory=list)
    loss_since_eval: list[float] = field(default_factory=list)
    log: dict[str, object] = field(default_factory=dict)  # run_id and rank for every log line


def prepare_run(
    model: nn.Module,
    train_ids: Tensor,
    eval_ids: Tensor | None,
    config: TrainConfig,
    *,
    setup: DeviceSetup,
    ctx: DistContext,
    resume_from: TrainState | None,
) -> PreparedRun:
    """Validate the inputs, place the model, build optimizer / scaler / eval batches, seed,
    and restore a checkpoint's state when resuming."""
    check_token_ids(train_ids, "train_ids", config.block_size + 1)
    if eval_ids is not None:
        check_token_ids(eval_ids, "eval_ids", 2)
    elif config.early_stopping_patience is not None:
        raise AppError(ErrorCode.CONFIG_INVALID, "early stopping needs eval_ids (a holdout)")
    limit = context_size(model)
    if limit is not None and config.block_size > limit:
        raise AppError(
            ErrorCode.CONFIG_INVALID,
            f"block_size {config.block_size} exceeds the model's context of {limit} tokens",
        )
    if resume_from is not None and resume_from.step > config.max_steps:
        raise AppError(
            ErrorCode.CONFIG_INVALID,
            f"cannot resume at step {resume_from.step}: max_steps is {config.max_steps}",
        )
    # dropout differs per rank on purpose; the batch sampler is shared (see get_batch)
    seed_everything(config.seed + ctx.rank)
    sampler = make_generator(config.seed)
    device = ctx.device
    model.to(device)
    _check_vocab(model, train_ids, eval_ids, device)
    fwd_model = torch.compile(model) if config.compile else model
    if not isinstance(fwd_model, nn.Module):
        raise AppError(ErrorCode.INTERNAL, "torch.compile did not return a module")
    optimizer = configure_optimizer(model, config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=setup.use_grad_scaler)
    dtype = setup.autocast_dtype

    def autocast() -> AbstractContextManager[object]:
        if dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    loader = None
    if eval_ids is not None:
        loader = eval_loader(
            eval_ids,
            config.block_size,
            config.batch_size,
            config.eval_batches,
            rank=ctx.rank,
            world_size=ctx.world_size,
            num_workers=setup.num_workers,
            pin_memory=setup.pin_memory,
            seed=config.seed,
        )
    run = PreparedRun(
        raw_model=model,
        fwd_model=fwd_model,
        train_model=wrap_model(fwd_model, ctx),
        optimizer=optimizer,
        scaler=scaler,
        sampler=sampler,
        autocast=autocast,
        eval_batches=loader,
        device=device,
        step=0,
        tokens_seen=0,
        best_eval_loss=None,
        evals_without_improvement=0,
    )
    if resume_from is not None:
        optimizer.load_state_dict(resume_from.optimizer)
        if resume_from.scaler is not None and scaler.is_enabled():
            scaler.load_state_dict(resume_from.scaler)
        restore_rng_state(resume_from.rng, sampler)
        run.step = run.start_step = resume_from.step
        run.tokens_seen = run.start_tokens = resume_from.tokens_seen
        run.best_eval_loss = resume_from.best_eval_loss
        run.evals_without_improvement = resume_from.evals_without_improvement
    model.train()
    return run


def configure_optimizer(
    model: nn.Module, config: TrainConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW with weight decay on 2-D weights (matmuls, embeddings) only: decaying biases
    and norm gains just pulls them toward zero for no regularisation benefit."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict[str, object]] = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=config.learning_rate,
        betas=(config.beta1, config.beta2),
        fused=device.type == "cuda",  # one kernel for all parameters on GPU
    )


def _check_vocab(
    model: nn.Module, train_ids: Tensor, eval_ids: Tensor | None, device: torch.device
) -> None:
    max_id = int(train_ids.max())
    if eval_ids is not None:
        max_id = max(max_id, int(eval_ids.max()))
    require_vocab(output_vocab_size(model, device), max_id)
