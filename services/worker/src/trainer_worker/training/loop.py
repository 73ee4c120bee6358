"""The training loop: one function, nanoGPT-style, shared by every model family.

`train_task(model, task, config, callbacks)` runs AdamW with warmup + cosine LR, gradient
accumulation and clipping, autocast (plus a GradScaler for fp16), optional torch.compile and
DDP under torchrun, and optionally a moving average of the weights (`training/ema.py`); it
evaluates on the holdout, stops early when the eval loss stalls, and
hands progress, evals and checkpoints to the caller's callbacks. The task (`task.py`) says
what a batch is, its loss and how to evaluate; `train(model, train_ids, eval_ids, ...)` is
the causal language model's entry. Storage, Redis and events stay outside: the loop only
calls back.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import TrainConfig
from trainer_worker.training.callbacks import (
    Callbacks,
    CheckpointInfo,
    CheckpointReason,
    EvalInfo,
    ProgressInfo,
    StopReason,
    TrainResult,
)
from trainer_worker.training.device import resolve_device_setup
from trainer_worker.training.distributed import (
    DistContext,
    all_reduce_mean,
    broadcast_flag,
    init_distributed,
    shutdown_distributed,
)
from trainer_worker.training.evaluate import perplexity
from trainer_worker.training.lm_task import LanguageModelTask
from trainer_worker.training.prepare import PreparedRun, prepare_run
from trainer_worker.training.schedule import get_lr
from trainer_worker.training.state import TrainState, capture_train_state
from trainer_worker.training.task import BatchT, TrainingTask

logger = logging.getLogger(__name__)


def train(
    model: nn.Module,
    train_ids: Tensor,
    eval_ids: Tensor | None,
    config: TrainConfig,
    callbacks: Callbacks | None = None,
    *,
    resume_from: TrainState | None = None,
    run_id: str | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TrainResult:
    """Train the causal LM `model` in place on `train_ids` (1-D token ids), evaluating on
    `eval_ids`; see the module docstring.

    Resuming: load the checkpoint's weights into `model` first, then pass its TrainState.
    """
    task = LanguageModelTask(train_ids, eval_ids)
    return train_task(
        model, task, config, callbacks, resume_from=resume_from, run_id=run_id, clock=clock
    )


def train_task(
    model: nn.Module,
    task: TrainingTask[BatchT],
    config: TrainConfig,
    callbacks: Callbacks | None = None,
    *,
    resume_from: TrainState | None = None,
    run_id: str | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TrainResult:
    """Train `model` in place on `task`'s batches; see the module docstring."""
    cb = callbacks or Callbacks()
    setup = resolve_device_setup(config.device, config.precision)
    ctx = init_distributed(setup.device)
    run: PreparedRun[BatchT] | None = None
    try:
        run = prepare_run(model, task, config, setup=setup, ctx=ctx, resume_from=resume_from)
        run.log = {"run_id": run_id, "rank": ctx.rank}
        return _loop(run, config, cb, ctx=ctx, clock=clock)
    except BaseException as e:
        if ctx.enabled:  # the traceback's frames would keep the DDP wrapper alive
            traceback.clear_frames(e.__traceback__)
        raise
    finally:
        run = None  # drop the DDP wrapper before its process group (see shutdown_distributed)
        shutdown_distributed(ctx)


def _loop(
    run: PreparedRun[BatchT],
    config: TrainConfig,
    cb: Callbacks,
    *,
    ctx: DistContext,
    clock: Callable[[], float],
) -> TrainResult:
    accum, task = config.grad_accum_steps, run.task
    tokens_per_step = config.batch_size * config.block_size * accum * ctx.world_size
    t0 = clock()
    progress = _ProgressClock(start_t=t0, last_t=t0, last_tokens=run.tokens_seen)
    logger.info("training started", extra={"event": "train.started", "step": run.step, **run.log})
    if run.step == 0 and (stop := _evaluate(run, config, cb, ctx)):
        return _finish(run, cb, ctx, stop, clock() - t0)

    while run.step < config.max_steps:
        if _stop_requested(cb, ctx):
            return _finish(run, cb, ctx, "cancelled", clock() - t0)

        lr = set_lr(run.optimizer, get_lr(run.step, config))
        micro_losses: list[Tensor] = []
        try:
            for micro in range(accum):
                batch = task.get_batch(config, run.sampler, run.device, ctx)
                # forward
                with _grad_sync(run.train_model, last_micro=micro == accum - 1), run.autocast():
                    loss = task.loss(run.train_model, batch)
                    # the step's loss is the micro-batch mean (no extra autograd op for one)
                    loss = loss / accum if accum > 1 else loss
                # backward (grads add up over micro-batches; DDP averages them over ranks)
                torch.autograd.backward(run.scaler.scale(loss))
                micro_losses.append(loss.detach())
            step_loss = micro_losses[0] if accum == 1 else torch.stack(micro_losses).sum()
            loss_value = all_reduce_mean(float(step_loss), ctx)
            if not math.isfinite(loss_value):
                raise _diverged(run.step + 1, lr, f"loss became {loss_value}")
            # backward + clip: unscale first so the clip threshold applies to true gradients
            if config.grad_clip > 0:
                run.scaler.unscale_(run.optimizer)
                norm = float(nn.utils.clip_grad_norm_(run.raw_model.parameters(), config.grad_clip))
                if not math.isfinite(norm) and not run.scaler.is_enabled():
                    raise _diverged(run.step + 1, lr, f"gradient norm became {norm}")
            # step (the scaler skips it when fp16 gradients overflowed, then lowers its scale)
            run.scaler.step(run.optimizer)
            run.scaler.update()
            run.optimizer.zero_grad(set_to_none=True)
        except torch.OutOfMemoryError as e:
            raise _out_of_memory(run.step + 1, config) from e
        _count_step(run, tokens_per_step, loss_value)
        if ctx.is_main and cb.on_progress is not None:
            progress.maybe_report(run, config, cb.on_progress, task.train_tokens, lr, now=clock())

        # eval + checkpoint
        due_eval = run.step % config.eval_every == 0 or run.step == config.max_steps
        if due_eval and (stop := _evaluate(run, config, cb, ctx)):
            return _finish(run, cb, ctx, stop, clock() - t0)
        every = config.checkpoint_every
        if every is not None and run.step % every == 0 and run.step < config.max_steps:
            _checkpoint(run, cb, ctx, "interval")

    return _finish(run, cb, ctx, "completed", clock() - t0)


def _count_step(run: PreparedRun[BatchT], tokens: int, loss: float) -> None:
    """The bookkeeping of one finished update (and the moving average's)."""
    run.step += 1
    if run.average is not None:
        run.average.update(run.step)
    run.tokens_seen += tokens
    run.losses.append(loss)
    run.loss_since_eval.append(loss)


@dataclass
class _ProgressClock:
    """Reports every `progress_every_steps` steps, or sooner once `progress_every_s` passed."""

    start_t: float  # when this call to train() started
    last_t: float  # when the previous report went out
    last_tokens: int  # tokens seen at the previous report

    def maybe_report(
        self,
        run: PreparedRun[BatchT],
        config: TrainConfig,
        on_progress: Callable[[ProgressInfo], None],
        train_tokens: int,
        lr: float,
        *,
        now: float,
    ) -> None:
        by_steps = run.step % config.progress_every_steps == 0
        if not by_steps and now - self.last_t < config.progress_every_s:
            return
        per_step = (now - self.start_t) / (run.step - run.start_step)
        on_progress(
            ProgressInfo(
                step=run.step,
                max_steps=config.max_steps,
                epoch=run.tokens_seen / train_tokens,
                loss=run.losses[-1],
                lr=lr,
                tokens_per_s=(run.tokens_seen - self.last_tokens) / max(now - self.last_t, 1e-9),
                eta_s=per_step * (config.max_steps - run.step),
                elapsed_s=now - self.start_t,
            )
        )
        self.last_t, self.last_tokens = now, run.tokens_seen


def _evaluate(
    run: PreparedRun[BatchT], config: TrainConfig, cb: Callbacks, ctx: DistContext
) -> StopReason | None:
    """Holdout loss (and the task's metrics) at the current step; why to stop now (early
    stopping, a study's pruner)."""
    if not run.task.has_eval:
        return None
    with _averaged(run):
        result = run.task.evaluate(run.fwd_model, run.device, run.autocast, ctx)
    eval_loss, score = result.loss, result.score
    # "best" is by the task's selection score (its loss unless it declares another), and so
    # are early stopping and the score checkpoints carry for retention's keep-best
    best = run.best_eval_loss
    improved = best is None or score < best - config.early_stopping_min_delta
    if improved:
        run.best_eval_loss, run.evals_without_improvement = score, 0
    else:
        run.evals_without_improvement += 1
    since = run.loss_since_eval
    info = EvalInfo(
        step=run.step,
        eval_loss=eval_loss,
        perplexity=perplexity(eval_loss),
        train_loss=sum(since) / len(since) if since else None,
        best_eval_loss=min(score, best) if best is not None else score,
        improved=improved,
        metrics=dict(result.metrics),
        selection=result.selection,
    )
    run.loss_since_eval = []
    run.last_eval_loss, run.last_eval_step = score, run.step
    run.eval_history.append(info)
    logger.info(
        "evaluated",
        extra={"event": "train.eval", "step": run.step, "eval_loss": eval_loss, **run.log},
    )
    if ctx.is_main and cb.on_eval is not None:
        cb.on_eval(info)
    # a study's pruner decides on rank 0; every rank hears the answer
    if broadcast_flag(ctx.is_main and cb.should_prune is not None and cb.should_prune(info), ctx):
        return "pruned"
    patience = config.early_stopping_patience
    if patience is not None and run.evals_without_improvement >= patience:
        return "early_stopping"
    return None


def _checkpoint(
    run: PreparedRun[BatchT], cb: Callbacks, ctx: DistContext, reason: CheckpointReason
) -> None:
    if not ctx.is_main or cb.on_checkpoint is None:
        return
    state = capture_train_state(
        step=run.step,
        optimizer=run.optimizer,
        scaler=run.scaler,
        sampler=run.sampler,
        tokens_seen=run.tokens_seen,
        best_eval_loss=run.best_eval_loss,
        evals_without_improvement=run.evals_without_improvement,
        live_weights=None if run.average is None else run.average.live_weights(),
    )
    # a checkpoint carries an eval loss only when these weights were evaluated: an earlier
    # step's loss would let retention keep it as "best" for a loss it never had
    eval_loss = run.last_eval_loss if run.last_eval_step == run.step else None
    best = eval_loss is not None and eval_loss == run.best_eval_loss
    info = CheckpointInfo(run.step, run.raw_model, state, reason, eval_loss, is_best=best)
    with _averaged(run):  # the callback copies the weights before it returns
        cb.on_checkpoint(info)


def _finish(
    run: PreparedRun[BatchT], cb: Callbacks, ctx: DistContext, reason: StopReason, duration_s: float
) -> TrainResult:
    _checkpoint(run, cb, ctx, "cancelled" if reason == "cancelled" else "final")
    if run.average is not None:  # the caller's model is the averaged one
        run.average.apply()
    logger.info(
        "training ended",
        extra={"event": "train.ended", "reason": reason, "step": run.step, **run.log},
    )
    done = run.tokens_seen - run.start_tokens
    return TrainResult(
        final_step=run.step,
        start_step=run.start_step,
        losses=run.losses,
        eval_history=run.eval_history,
        tokens_per_s=done / duration_s if duration_s > 0 else 0.0,
        duration_s=duration_s,
        stopped_early=reason != "completed",
        reason=reason,
        best_eval_loss=run.best_eval_loss,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> float:
    """Each group at the scheduled rate times its `lr_scale` (the head's `head_lr_scale`);
    returns the scheduled rate, the one progress reports."""
    for group in optimizer.param_groups:
        group["lr"] = lr * float(group.get("lr_scale", 1.0))
    return lr


def _averaged(run: PreparedRun[BatchT]) -> AbstractContextManager[object]:
    """The model holds the weights' moving average inside, when the run keeps one."""
    return nullcontext() if run.average is None else run.average.swapped()


def _stop_requested(cb: Callbacks, ctx: DistContext) -> bool:
    """Cooperative cancellation: rank 0 asks the caller, every rank hears the answer."""
    asked = ctx.is_main and cb.should_stop is not None and cb.should_stop()
    return broadcast_flag(asked, ctx)


def _grad_sync(model: nn.Module, *, last_micro: bool) -> AbstractContextManager[object]:
    """Under DDP, all-reduce gradients only on the last micro-batch of an accumulation."""
    if isinstance(model, DistributedDataParallel) and not last_micro:
        return model.no_sync()
    return nullcontext()


def _diverged(step: int, lr: float, what: str) -> AppError:
    return AppError(
        ErrorCode.TRAINING_DIVERGED,
        f"training diverged at step {step}: {what} (lr={lr:.3g}); lower learning_rate, "
        "lengthen warmup_steps or enable grad_clip",
    )


def _out_of_memory(step: int, config: TrainConfig) -> AppError:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return AppError(
        ErrorCode.OUT_OF_MEMORY,
        f"out of memory at step {step} with batch_size={config.batch_size} x "
        f"block_size={config.block_size}; lower batch_size (raise grad_accum_steps to keep "
        "the global batch) or block_size",
    )
