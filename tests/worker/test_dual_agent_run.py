"""The dual-agent family through the real job (RQ SimpleWorker in-process, real Redis):
a tiny encoder trained from scratch on generated posts beats the keyword baseline on the
held-out templates, and its figures reach the eval events, the completed event and the
manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from rq import Queue, SimpleWorker

from platform_core.event_bus import EventBus
from platform_core.events import Event, MetricsCompleted, MetricsEval
from platform_core.json_types import JsonValue
from platform_core.layout import DataLayout
from platform_core.manifests import read_run_manifest
from platform_core.queue import TRAINING_QUEUE, enqueue_job
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.specs import DualAgentPrediction, PredictResult
from tests.worker.dual_agent_helpers import dual_agent_spec
from trainer_worker import defaults
from trainer_worker.dual_agent.criteria import CRITERIA
from trainer_worker.dual_agent.predict import predict_work

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(autouse=True)
def worker_env(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> None:
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)


def _work(client: redis.Redis) -> None:
    SimpleWorker([Queue(TRAINING_QUEUE, connection=client)], connection=client).work(burst=True)


def _events(client: redis.Redis, run_id: str) -> list[Event]:
    return [d.event for d in EventBus(client).read(count=10_000) if d.event.run_id == run_id]


def test_the_trained_model_beats_the_keyword_baseline_on_held_out_templates(
    redis_client: redis.Redis, data_root: Path
) -> None:
    enqueue_job(redis_client, "train_model", "dual-1", dual_agent_spec(), user_id=5)
    _work(redis_client)
    store = RunStateStore(redis_client)
    assert store.status("dual-1") is RunStatus.COMPLETED, store.message("dual-1")

    layout = DataLayout(data_root)
    manifest = read_run_manifest(layout.run_manifest("dual-1"))
    record = manifest.dual_agent
    assert record is not None
    test, baseline = record.test_metrics, record.baseline_test_metrics
    f1, char_f1 = "test/criteria_matcher/f1", "test/evidence_binder/char_f1"
    assert test[f1] > baseline[f1], (test[f1], baseline[f1])
    assert test[char_f1] > baseline[char_f1], (test[char_f1], baseline[char_f1])
    assert set(record.thresholds) == set(CRITERIA)
    assert all(0.0 < t < 1.0 for t in record.thresholds.values())
    assert record.data_report["test"]["POSTS"] == 120  # a fifth of 600, held-out templates
    assert f"test/criteria_matcher/f1/{CRITERIA[0]}" in test

    events = _events(redis_client, "dual-1")
    evals = [e for e in events if isinstance(e, MetricsEval)]
    assert [e.payload.step for e in evals] == [0, 100, 200, 300]
    for name in ("loss", "accuracy", "precision", "recall", "f1", "auc"):
        assert f"val/criteria_matcher/{name}" in evals[-1].payload.metrics
    for name in ("exact_match", "has_answer", "char_f1", "char_precision", "char_recall"):
        assert f"val/evidence_binder/{name}" in evals[-1].payload.metrics
    assert "train/criteria_matcher/loss" in evals[-1].payload.metrics
    assert "train/evidence_binder/loss" in evals[-1].payload.metrics
    assert evals[-1].payload.eval_loss < evals[0].payload.eval_loss
    (completed,) = [e for e in events if isinstance(e, MetricsCompleted)]
    assert completed.payload.metrics[f1] == test[f1]
    assert completed.payload.metrics["baseline/criteria_matcher/f1"] == baseline[f1]
    assert "criteria macro F1" in (store.message("dual-1") or "")

    history = layout.run_dir("dual-1") / "eval" / "history.jsonl"
    rows = [json.loads(line) for line in history.read_text().splitlines()]
    assert (
        rows[-1]["metrics"]["val/criteria_matcher/f1"]
        == evals[-1].payload.metrics["val/criteria_matcher/f1"]
    )
    model_dir = layout.model_dir("dual-1")
    assert (model_dir / "tokenizer" / "tokenizer.json").is_file()
    assert (model_dir / "encoder" / "config.json").is_file()


def test_a_softmax_criteria_head_trains_and_its_probabilities_are_shares(
    redis_client: redis.Redis, data_root: Path
) -> None:
    """`criteria_head: softmax` (one criterion per post, or none): the head has a "none"
    output, the loss is a cross-entropy that falls, and predict's probabilities are shares
    of one distribution (with "none" left out they sum to at most 1), unlike sigmoid's."""
    spec = dual_agent_spec(max_steps=120, eval_every=60, checkpoint_every=60)
    options = spec["dual_agent"]
    assert isinstance(options, dict)
    options["criteria_head"] = "softmax"
    enqueue_job(redis_client, "train_model", "dual-soft", spec, user_id=5)
    _work(redis_client)
    store = RunStateStore(redis_client)
    assert store.status("dual-soft") is RunStatus.COMPLETED, store.message("dual-soft")

    manifest = read_run_manifest(DataLayout(data_root).run_manifest("dual-soft"))
    assert manifest.dual_agent is not None and manifest.dual_agent.criteria_head == "softmax"
    evals = [e for e in _events(redis_client, "dual-soft") if isinstance(e, MetricsEval)]
    first, last = evals[0].payload.metrics, evals[-1].payload.metrics
    assert last["val/criteria_matcher/loss"] < first["val/criteria_matcher/loss"]

    texts: list[JsonValue] = [
        "I can't sleep anymore, I lie awake until 4am every night.",
        "Had a great weekend hiking with friends, the weather was perfect.",
    ]
    answer = PredictResult.model_validate(predict_work(data_root, "dual-soft", {"texts": texts}))
    for prediction in answer.predictions:
        assert isinstance(prediction, DualAgentPrediction)
        shares = [score.probability for score in prediction.criteria]
        assert [score.criterion for score in prediction.criteria] == list(CRITERIA)
        assert all(0.0 <= p <= 1.0 for p in shares)
        assert sum(shares) <= 1.0 + 1e-5
    hiking = answer.predictions[1]
    assert isinstance(hiking, DualAgentPrediction)
    none_share = 1.0 - sum(score.probability for score in hiking.criteria)
    assert none_share > max(score.probability for score in hiking.criteria)  # "no criterion"
