"""A classifier run end to end through the API and trainctl: a prepared built-in dataset,
`trainctl submit model --family classifier --dataset ...`, then `trainctl predict` against
the live API with a real worker (labels with probabilities)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import torch

from platform_core.api_models import PredictRecord
from platform_core.queue import INFERENCE_QUEUE
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.specs import ClassifierPrediction
from tests.api.conftest import work
from tests.cli.test_remote import Cli, cli, while_working
from trainer_worker import defaults

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["cli"]  # the fixture, imported for this module's tests

TEXTS = (
    "Creates a [SERVICE] bucket and sets its access control list and versioning.",
    "Describes the instances in a virtual private cloud and their security groups.",
)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster on a busy machine
    yield
    torch.set_num_threads(threads)


def test_a_classifier_is_submitted_by_trainctl_and_predicts(
    cli: Cli, redis_client: redis.Redis
) -> None:
    submitted = cli(
        "submit", "model", "--family", "classifier", "--dataset", "ds-c", "--id", "clf-x"
    )
    assert submitted.code != 0  # the dataset does not exist yet: refused before queuing
    assert "prepare it first" in submitted.err

    prepared = cli(
        "dataset", "prepare", "--source", "builtin", "--max-per-class", "20", "--id", "ds-c"
    )
    assert prepared.code == 0, prepared.err
    work(redis_client)
    args = ("--steps", "40", "--block-size", "64", "--eval-every", "20", "--device", "cpu")
    submitted = cli(
        "submit", "model", "--family", "classifier", "--dataset", "ds-c", "--id", "clf-p", *args
    )
    assert submitted.code == 0, submitted.err
    work(redis_client)
    store = RunStateStore(redis_client)
    assert store.status("clf-p") is RunStatus.COMPLETED, store.message("clf-p")

    answered = while_working(
        cli, redis_client, INFERENCE_QUEUE, "predict", "clf-p", *TEXTS, "--json"
    )
    assert answered.code == 0, answered.err
    record = PredictRecord.model_validate(answered.json())
    assert record.status == "completed" and record.result is not None
    predictions = record.result.predictions
    assert [p.family for p in predictions] == ["classifier", "classifier"]
    for prediction in predictions:
        assert isinstance(prediction, ClassifierPrediction)
        assert prediction.top[0].label == prediction.label
        assert 0.0 < prediction.probability <= 1.0
        assert sum(p.probability for p in prediction.top) <= 1.0 + 1e-6

    shown = while_working(cli, redis_client, INFERENCE_QUEUE, "predict", "clf-p", TEXTS[0])
    assert shown.code == 0, shown.err
    first = predictions[0]
    assert isinstance(first, ClassifierPrediction)
    assert shown.out.startswith(f"[1] {first.label} (")
