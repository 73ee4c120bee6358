"""Mixed precision on a real GPU: deselected automatically where no CUDA device is present."""

from __future__ import annotations

import pytest
import torch

from platform_core.specs import ModelSpec, PrecisionChoice, TrainConfig
from tests.worker.train_helpers import train_eval_split
from trainer_worker.models.registry import build_model
from trainer_worker.training.device import resolve_device_setup
from trainer_worker.training.loop import train
from trainer_worker.training.seeding import seed_everything


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_amp_training_on_cuda_lowers_the_eval_loss(precision: PrecisionChoice) -> None:
    setup = resolve_device_setup("cuda", precision)
    assert setup.autocast_dtype in (torch.float16, torch.bfloat16)
    assert setup.use_grad_scaler == (setup.precision == "fp16")
    train_ids, eval_ids = train_eval_split(40_000)
    seed_everything(0)
    model = build_model(ModelSpec(family="gpt2"), 256, eos_id=10)
    config = TrainConfig(
        block_size=64,
        batch_size=16,
        max_steps=40,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=4,
        eval_every=20,
        eval_batches=4,
        device="cuda",
        precision=precision,
    )
    result = train(model, train_ids, eval_ids, config)
    assert next(model.parameters()).device.type == "cuda"
    assert result.eval_history[-1].eval_loss < result.eval_history[0].eval_loss - 1.0
