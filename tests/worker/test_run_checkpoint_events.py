"""A checkpoint event goes out only for a checkpoint that retention kept, so a resume never
looks for one that is gone; the newest written checkpoint is kept whatever the size budget."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import redis
import torch

from platform_core.event_bus import EventBus
from platform_core.events import MetricsCheckpoint
from platform_core.layout import DataLayout
from platform_core.run_state import RunStateStore
from platform_core.specs import RetentionSpec
from trainer_worker.checkpoints import list_checkpoints, save_checkpoint
from trainer_worker.event_spool import EventSpool
from trainer_worker.job_context import JobContext
from trainer_worker.run_callbacks import RunCallbacks
from trainer_worker.training.callbacks import CheckpointInfo
from trainer_worker.training.seeding import make_generator
from trainer_worker.training.state import TrainState, capture_train_state


def _model_and_state() -> tuple[torch.nn.Module, TrainState]:
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 64)).sum().backward()
    optimizer.step()
    state = capture_train_state(
        step=0,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        sampler=make_generator(0),
        tokens_seen=0,
        best_eval_loss=None,
        evals_without_improvement=0,
    )
    return model, state


def _callbacks(redis_client: redis.Redis, folder: Path, retention: RetentionSpec) -> RunCallbacks:
    layout = DataLayout(folder.parent.parent)
    context = JobContext(
        run_id="run-ck",
        kind="train_model",
        user_id=None,
        attempt=1,
        layout=layout,
        spool=EventSpool(EventBus(redis_client), layout.spool_file("run-ck")),
        store=RunStateStore(redis_client),
    )
    return RunCallbacks(context=context, folder=folder, retention=retention)


def _checkpoint_events(redis_client: redis.Redis) -> list[int]:
    deliveries = EventBus(redis_client).read(count=1000)
    return [d.event.payload.step for d in deliveries if isinstance(d.event, MetricsCheckpoint)]


def _save(run: RunCallbacks, model: torch.nn.Module, state: TrainState, step: int) -> None:
    info = CheckpointInfo(
        step=step,
        model=model,
        state=replace(state, step=step),
        reason="interval",
        eval_loss=float(step),  # later is worse: the first one stays the best
        is_best=False,
    )
    run.on_checkpoint(info)
    run.writer.wait()


def test_only_kept_checkpoints_are_announced(redis_client: redis.Redis, data_root: Path) -> None:
    folder = data_root / "runs" / "run-ck"
    (folder / "checkpoints").mkdir(parents=True)
    model, state = _model_and_state()
    # a budget that holds one checkpoint: best (step 10) and newest cannot both stay
    one = RetentionSpec(keep_last_n=1, keep_best_k=1, max_total_size_gb=60_000 / 1024**3)
    run = _callbacks(redis_client, folder, one)
    _save(run, model, state, 10)
    _save(run, model, state, 20)
    steps = [int(p.name.removeprefix("step-")) for p in list_checkpoints(folder / "checkpoints")]
    assert steps == [20]  # the resume point, not the older best
    assert _checkpoint_events(redis_client) == [10, 20]
    assert run.context.store.progress("run-ck")["last_checkpoint_step"] == "20"
    # a checkpoint older than one already on disk (left by an earlier life) is not kept:
    # no event for it, and it is not advertised as the resume point
    save_checkpoint(folder / "checkpoints", model, replace(state, step=90), eval_loss=0.5)
    _save(run, model, state, 30)
    steps = [int(p.name.removeprefix("step-")) for p in list_checkpoints(folder / "checkpoints")]
    assert steps == [90]
    assert _checkpoint_events(redis_client) == [10, 20]
    assert run.context.store.progress("run-ck")["last_checkpoint_step"] != "30"
