"""A real tiny run trained through the API by an in-process worker, then described, logged,
evaluated, generated from and scored through the API and the project's client."""

from __future__ import annotations

import asyncio
import json
import logging
import tarfile
from pathlib import Path

import httpx
import pytest
import redis
from rq import Queue

from platform_core.errors import ErrorCode
from platform_core.http_client import ApiError, AsyncTrainerClient, TrainerClient
from platform_core.queue import INFERENCE_QUEUE
from platform_core.specs import GenerateRequest, ScoreRequest
from tests.api.conftest import LiveApi, char_tokenizer, tiny_run, work
from trainer_api import streams
from trainer_worker import defaults

pytestmark = pytest.mark.integration


@pytest.fixture
def trained(
    client: TrainerClient,
    redis_client: redis.Redis,
    corpus: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> str:
    monkeypatch.setattr(defaults, "HEARTBEAT_INTERVAL_S", 0.05)
    caplog.set_level(logging.INFO)  # as a worker logs, so the run's logs.jsonl gets lines
    tokenizer = client.train_tokenizer(char_tokenizer(corpus)).run_id
    run_id = client.train_model(tiny_run(tokenizer, corpus, "tiny")).run_id
    work(redis_client)  # both, in order
    return run_id


def _inference_queue(client: redis.Redis) -> int:
    return Queue(INFERENCE_QUEUE, connection=client).count


@pytest.mark.slow
def test_a_trained_run_has_metrics_logs_eval_and_artifacts(
    client: TrainerClient, trained: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "FINISH_GRACE_S", 0.0)
    run = client.get_run(trained)
    assert (run.status, run.kind, run.eta_s) == ("completed", "train_model", None)
    assert run.last_heartbeat is not None and run.progress is not None
    assert run.progress.step == 20
    assert run.metrics is not None and run.metrics.steps == 20
    assert run.metrics.final_perplexity is not None and run.metrics.first_perplexity is not None
    assert run.metrics.final_perplexity < run.metrics.first_perplexity
    assert run.metrics.duration_s is not None and run.metrics.stop_reason == "completed"

    logs = client.run_logs(trained, tail=5).lines
    assert 1 <= len(logs) <= 5 and all(line.level is not None for line in logs)
    assert [line.message for line in client.stream_logs(trained, tail=5)] == [
        line.message for line in logs
    ]

    evaluation = client.get_eval(trained)
    assert [point.step for point in evaluation.history] == [0, 10, 20]
    assert evaluation.best_eval_loss is not None and len(evaluation.samples) == 3
    assert evaluation.samples[0].prompt == "The " and evaluation.evaluations == []

    archive = client.download_artifact("runs", trained, tmp_path / "run.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = tar.extractfile(f"{trained}/manifest.json")
        assert manifest is not None and json.load(manifest)["status"] == "completed"
    assert f"{trained}/model/model.safetensors" in names
    assert f"{trained}/logs.jsonl" in names


@pytest.mark.slow
def test_generate_score_and_evaluate_are_queued_then_polled(
    client: TrainerClient, redis_client: redis.Redis, trained: str, live_api: LiveApi
) -> None:
    greedy = GenerateRequest(prompt="The ", max_new_tokens=8, temperature=0)
    generating = client.generate(trained, greedy)
    assert (generating.run_id, generating.kind, generating.status) == (
        trained,
        "generate",
        "queued",
    )
    assert generating.request_id.startswith("gen-")
    assert client.get_generate(trained, generating.request_id).status == "queued"
    scoring = client.score(trained, ScoreRequest(text="The function", top_k=2))
    evaluating = client.evaluate(trained)
    assert _inference_queue(redis_client) == 3

    work(redis_client, INFERENCE_QUEUE)
    generated = client.get_generate(trained, generating.request_id)
    assert generated.status == "completed" and generated.result is not None
    assert generated.request == greedy and generated.finished_at is not None
    assert generated.result.steps[0] <= 8 and len(generated.result.outputs) == 1

    scored = client.get_score(trained, scoring.request_id)
    assert scored.result is not None and scored.result.num_tokens == len("The function")
    assert (
        scored.result.tokens[1].surprisal_bits is not None
        and len(scored.result.tokens[1].topk) == 2
    )

    evaluation = client.get_eval(trained, request_id=evaluating.request_id)
    assert evaluation.request is not None and evaluation.request.status == "completed"
    assert evaluation.request.result == evaluation.evaluations[0]
    assert evaluation.evaluations[0].tokens > 0

    async def poll() -> str:
        async with AsyncTrainerClient(live_api.base_url) as async_client:
            return (await async_client.get_score(trained, scoring.request_id)).status

    assert asyncio.run(poll()) == "completed"


@pytest.fixture
def model_run(data_root: Path) -> str:
    """A model run on disk (its manifest), enough for the API to accept requests on it."""
    folder = data_root / "runs" / "on-disk"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"status": "completed"}))
    return "on-disk"


def test_bad_requests_are_refused_before_anything_is_queued(
    live_api: LiveApi, redis_client: redis.Redis, model_run: str
) -> None:
    url = f"{live_api.base_url}/runs/{model_run}"
    generate = httpx.post(f"{url}/generate", json={"prompt": "x", "max_new_tokens": 1000})
    assert generate.status_code == 422
    assert generate.json()["code"] == "INVALID_INPUT"
    assert "max_new_tokens" in generate.json()["message"]
    score = httpx.post(f"{url}/score", json={"text": "", "top_k": 99})
    assert score.status_code == 422
    assert "text" in score.json()["message"] and "top_k" in score.json()["message"]
    evaluate = httpx.post(f"{url}/evaluate", json={"split": "test"})
    assert evaluate.status_code == 422 and "split" in evaluate.json()["message"]
    assert _inference_queue(redis_client) == 0


def test_unknown_runs_and_requests_are_404(
    client: TrainerClient, redis_client: redis.Redis, model_run: str, corpus: str
) -> None:
    with pytest.raises(ApiError) as no_run:
        client.generate("ghost", GenerateRequest(prompt="x"))
    assert (no_run.value.status, no_run.value.error_code) == (404, ErrorCode.NOT_FOUND)
    # a tokenizer's run is not a model run
    tokenizer = client.train_tokenizer(char_tokenizer(corpus)).run_id
    with pytest.raises(ApiError) as not_a_model:
        client.score(tokenizer, ScoreRequest(text="x"))
    assert not_a_model.value.status == 404
    with pytest.raises(ApiError) as no_eval:
        client.get_eval(tokenizer)
    assert no_eval.value.status == 404

    with pytest.raises(ApiError) as no_request:
        client.get_generate(model_run, "gen-unknown")
    assert no_request.value.status == 404
    asked = client.score(model_run, ScoreRequest(text="abc"))
    with pytest.raises(ApiError) as wrong_kind:
        client.get_generate(model_run, asked.request_id)  # a score request is not a generation
    assert wrong_kind.value.status == 404
    with pytest.raises(ApiError) as wrong_run:
        client.get_eval(model_run, request_id=asked.request_id)
    assert wrong_run.value.status == 404
    assert client.get_score(model_run, asked.request_id).status == "queued"


def test_idempotent_inference_requests(
    client: TrainerClient, redis_client: redis.Redis, model_run: str
) -> None:
    request = GenerateRequest(prompt="Once", seed=3)
    first = client.generate(model_run, request, idempotency_key="ask-once")
    assert client.generate(model_run, request, idempotency_key="ask-once") == first
    second_eval = client.evaluate(model_run, idempotency_key="eval-once")
    assert client.evaluate(model_run, idempotency_key="eval-once") == second_eval
    assert _inference_queue(redis_client) == 2

    empty = client.get_eval(model_run)
    assert (empty.history, empty.samples, empty.evaluations, empty.request) == ([], [], [], None)
