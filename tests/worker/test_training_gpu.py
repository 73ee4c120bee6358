"""Mixed precision on a real GPU: deselected automatically where no CUDA device is present."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import torch
from rq import Queue, SimpleWorker

from platform_core.layout import DataLayout
from platform_core.manifests import read_run_manifest
from platform_core.queue import TRAINING_QUEUE, enqueue_job
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.specs import ModelSpec, PrecisionChoice, TrainConfig
from tests.worker.classify.classifier_helpers import DATASET_SPEC, classifier_spec
from tests.worker.dual_agent_helpers import dual_agent_spec
from tests.worker.train_helpers import train_eval_split
from trainer_worker import defaults
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


@pytest.fixture
def cuda_worker(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> None:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)


def _work(client: redis.Redis) -> None:
    SimpleWorker([Queue(TRAINING_QUEUE, connection=client)], connection=client).work(burst=True)


@pytest.mark.gpu
@pytest.mark.usefixtures("cuda_worker")
def test_a_dual_agent_run_trains_on_cuda_with_mixed_precision(
    redis_client: redis.Redis, data_root: Path
) -> None:
    """The encoder family through the real job on the GPU (autocast in bf16 where the device
    has it): the run completes, its manifest says where it ran, the joint eval loss falls."""
    spec = dual_agent_spec(device="cuda", precision="auto", max_steps=200)
    enqueue_job(redis_client, "train_model", "dual-gpu", spec)
    _work(redis_client)
    store = RunStateStore(redis_client)
    assert store.status("dual-gpu") is RunStatus.COMPLETED, store.message("dual-gpu")
    manifest = read_run_manifest(DataLayout(data_root).run_manifest("dual-gpu"))
    assert (manifest.device or "").startswith("cuda")
    assert manifest.precision in ("bf16", "fp16")
    history = manifest.metrics.eval_history if manifest.metrics else []
    first, last = history[0].eval_loss, history[-1].eval_loss
    assert first is not None and last is not None and last < first
    assert manifest.dual_agent is not None
    assert manifest.dual_agent.test_metrics["test/criteria_matcher/f1"] > 0


@pytest.mark.gpu
@pytest.mark.usefixtures("cuda_worker")
def test_a_classifier_run_trains_on_cuda_with_mixed_precision(
    redis_client: redis.Redis, data_root: Path
) -> None:
    """The classifier through the real jobs on the GPU: its prepared dataset, training in
    bf16/fp16 autocast, a test report far above chance (15 classes)."""
    enqueue_job(redis_client, "prepare_dataset", "ds-gpu", DATASET_SPEC)
    spec = classifier_spec("ds-gpu", device="cuda", precision="auto")
    enqueue_job(redis_client, "train_model", "clf-gpu", spec)
    _work(redis_client)
    store = RunStateStore(redis_client)
    assert store.status("clf-gpu") is RunStatus.COMPLETED, store.message("clf-gpu")
    manifest = read_run_manifest(DataLayout(data_root).run_manifest("clf-gpu"))
    assert (manifest.device or "").startswith("cuda")
    assert manifest.precision in ("bf16", "fp16")
    assert manifest.classifier is not None
    assert manifest.classifier.test.accuracy > 3 / 15, manifest.classifier.test.accuracy
