"""Everything the training loop needs before its first step, gathered in one place.

`prepare_run` seeds every generator, moves the model to its device, lets the task check its
data against the model and build its holdout batches, wraps the model (torch.compile, DDP),
builds AdamW, the GradScaler and the autocast context, and restores a checkpoint's state
when resuming. The resulting `PreparedRun` also carries the loop's bookkeeping.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Generic

import torch
from torch import nn

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import TrainConfig
from trainer_worker.models.registry import context_size
from trainer_worker.training.callbacks import EvalInfo
from trainer_worker.training.device import DeviceSetup
from trainer_worker.training.distributed import DistContext, wrap_model
from trainer_worker.training.ema import WeightAverage, load_live_weights
from trainer_worker.training.evaluate import AutocastFactory
from trainer_worker.training.seeding import make_generator, restore_rng_state, seed_everything
from trainer_worker.training.state import TrainState
from trainer_worker.training.task import BatchT, TrainingTask


@dataclass
class PreparedRun(Generic[BatchT]):
    """What the loop works with, plus its mutable bookkeeping (step, evals, losses)."""

    task: TrainingTask[BatchT]  # the family's batches, loss and evaluation
    raw_model: nn.Module  # the caller's module: what checkpoints save
    fwd_model: nn.Module  # raw_model, or its torch.compile wrapper
    train_model: nn.Module  # fwd_model, or DDP around it
    optimizer: torch.optim.AdamW
    scaler: torch.amp.GradScaler
    sampler: torch.Generator
    autocast: AutocastFactory
    device: torch.device
    step: int
    tokens_seen: int
    best_eval_loss: float | None
    evals_without_improvement: int
    average: WeightAverage | None = None  # train.ema_decay's moving average of the weights
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
    task: TrainingTask[BatchT],
    config: TrainConfig,
    *,
    setup: DeviceSetup,
    ctx: DistContext,
    resume_from: TrainState | None,
) -> PreparedRun[BatchT]:
    """Validate the inputs, place the model, let the task prepare its data, build optimizer
    and scaler, seed, and restore a checkpoint's state when resuming."""
    if not task.has_eval and config.early_stopping_patience is not None:
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
    # a checkpoint's model weights are the average; training goes on from its live ones
    average = None if config.ema_decay is None else WeightAverage(model, config.ema_decay)
    if resume_from is not None and resume_from.live_weights is not None:
        load_live_weights(model, resume_from.live_weights)
    task.prepare(model, config, setup=setup, ctx=ctx)
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

    run = PreparedRun(
        task=task,
        raw_model=model,
        fwd_model=fwd_model,
        train_model=wrap_model(fwd_model, ctx),
        optimizer=optimizer,
        scaler=scaler,
        sampler=sampler,
        autocast=autocast,
        device=device,
        step=0,
        tokens_seen=0,
        best_eval_loss=None,
        evals_without_improvement=0,
        average=average,
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
    and norm gains just pulls them toward zero for no regularisation benefit. With
    `head_lr_scale` other than 1 the head (`head_parameters`) is a group of its own whose
    `lr_scale` the loop multiplies the scheduled rate by."""
    params = [p for p in model.parameters() if p.requires_grad]
    parts: list[tuple[list[nn.Parameter], float]] = [(params, 1.0)]
    if config.head_lr_scale != 1.0:
        head = {id(p) for p in head_parameters(model)}
        parts = [
            ([p for p in params if id(p) not in head], 1.0),
            ([p for p in params if id(p) in head], config.head_lr_scale),
        ]
        if not all(part for part, _ in parts):
            raise AppError(
                ErrorCode.CONFIG_INVALID,
                f"head_lr_scale {config.head_lr_scale} needs trainable parameters both in "
                f"the base model and in a head outside it; {type(model).__name__} has "
                f"{len(parts[0][0])} and {len(parts[1][0])} (set it to 1)",
            )
    groups: list[dict[str, object]] = []
    for part, scale in parts:
        groups.append(
            {"params": [p for p in part if p.dim() >= 2], "weight_decay": config.weight_decay}
        )
        groups.append({"params": [p for p in part if p.dim() < 2], "weight_decay": 0.0})
        for group in groups[-2:]:
            group["lr_scale"] = scale
    return torch.optim.AdamW(
        groups,
        lr=config.learning_rate,
        betas=(config.beta1, config.beta2),
        fused=device.type == "cuda",  # one kernel for all parameters on GPU
    )


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of a transformers model outside its base model (`base_model_prefix`:
    a sequence classifier's `classifier`, not the encoder or its pooler); none for a model
    with no base model (a plain `nn.Module`) or whose head is tied to it (GPT-2's `lm_head`
    is its token embedding)."""
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or not isinstance(getattr(model, prefix, None), nn.Module):
        return []
    return [p for name, p in model.named_parameters() if not name.startswith(f"{prefix}.")]
