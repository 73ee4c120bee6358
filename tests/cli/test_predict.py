"""A dual-agent run submitted through the API (no tokenizer run: it trains its own), then
`trainctl predict` against the live API with a real worker, and predict's typed errors."""

from __future__ import annotations

import pytest
import redis

from platform_core.api_models import PredictRecord, RunCreate
from platform_core.errors import ErrorCode
from platform_core.http_client import ApiError, TrainerClient
from platform_core.queue import INFERENCE_QUEUE
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.specs import MAX_PREDICT_TEXTS, PredictRequest, TrainRunSpec
from tests.api.conftest import work
from tests.cli.test_remote import Cli, cli, while_working
from tests.worker.dual_agent_helpers import dual_agent_spec
from trainer_worker import defaults
from trainer_worker.dual_agent.criteria import CRITERIA

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["cli"]  # the fixture, imported for this module's tests

TEXTS = (
    "We got food from the new taco place. Lately I can't sleep at night and it just won't stop.",
    "My sister feels worthless lately and I'm worried about her.",
)


def test_predict_through_the_api_and_trainctl(
    cli: Cli,
    client: TrainerClient,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)
    spec = TrainRunSpec.model_validate(dual_agent_spec(max_steps=40, eval_every=20))
    accepted = client.train_model(RunCreate(spec=spec, run_id="dual-p"))
    assert accepted.kind == "train_model"
    work(redis_client)
    store = RunStateStore(redis_client)
    assert store.status("dual-p") is RunStatus.COMPLETED, store.message("dual-p")

    answered = while_working(
        cli, redis_client, INFERENCE_QUEUE, "predict", "dual-p", *TEXTS, "--json"
    )
    assert answered.code == 0, answered.err
    record = PredictRecord.model_validate(answered.json())
    assert record.status == "completed" and record.result is not None
    assert len(record.result.predictions) == len(TEXTS)
    for text, prediction in zip(TEXTS, record.result.predictions, strict=True):
        assert prediction.family == "dual_agent"
        assert [c.criterion for c in prediction.criteria] == list(CRITERIA)
        assert all(0.0 <= c.probability <= 1.0 for c in prediction.criteria)
        assert prediction.matched == [c.criterion for c in prediction.criteria if c.matched]
        if prediction.evidence is not None:
            span = prediction.evidence
            assert 0 <= span.start < span.end <= len(text)
            assert span.text == text[span.start : span.end]

    shown = while_working(cli, redis_client, INFERENCE_QUEUE, "predict", "dual-p", TEXTS[0])
    assert shown.code == 0, shown.err
    assert shown.out.startswith("[1] matched: ") and "    evidence: " in shown.out

    # typed errors: too many texts (422), an unknown run (404 -> exit 3), an empty text
    with pytest.raises(ApiError) as too_many:
        client.predict(
            "dual-p", PredictRequest.model_construct(texts=("x",) * (MAX_PREDICT_TEXTS + 1))
        )
    assert too_many.value.status == 422 and too_many.value.code == ErrorCode.INVALID_INPUT
    assert cli("predict", "ghost", "hi").code == 3
    empty = cli("predict", "dual-p", "")
    assert empty.code != 0 and "texts" in empty.err
