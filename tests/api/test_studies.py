"""Studies through the API on a real HTTP server: submit (validated before anything is
queued), list with a status filter and paging, describe with trials and the best so far,
cancel, evaluate again."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import httpx
import pytest
import redis
from rq import Queue

from platform_core.errors import ErrorCode
from platform_core.http_client import ApiError, TrainerClient
from platform_core.json_types import JsonObject, JsonValue
from platform_core.queue import TRAINING_QUEUE
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.study_api import (
    STUDY_PLOTS,
    StudyCreate,
    StudyQuery,
    cancel_study,
    create_study,
    evaluate_study,
    get_study,
    list_studies,
    study_plot,
)
from platform_core.study_specs import StudySpec
from tests.api.conftest import LiveApi, char_tokenizer, work

pytestmark = pytest.mark.integration


def study_spec(tokenizer_id: str, corpus: str, **fields: JsonValue) -> JsonObject:
    spec: JsonObject = {
        "name": "api-study",
        "base": {
            "model": {"family": "char_lstm", "preset": "tiny"},
            "tokenizer_id": tokenizer_id,
            "corpus": {"path": corpus},
            "train": {
                "max_steps": 10,
                "batch_size": 8,
                "block_size": 32,
                "learning_rate": 1e-2,
                "min_lr": 0.0,
                "warmup_steps": 0,
                "eval_every": 5,
                "eval_batches": 2,
                "checkpoint_every": 5,
                "device": "cpu",
            },
            "sample_prompts": [],
        },
        "search_space": {
            "train.learning_rate": {"type": "log_uniform", "low": 1e-3, "high": 3e-2},
        },
        "n_trials": 3,
        "parallelism": 2,
    }
    spec.update(fields)
    return spec


def _create(client: TrainerClient, spec: JsonObject, study_id: str | None = None) -> str:
    body = StudyCreate(spec=StudySpec.model_validate(spec), study_id=study_id, user_id=5)
    return client.call(create_study(body)).study_id


def test_a_study_is_queued_listed_described_and_cancelled(
    client: TrainerClient, redis_client: redis.Redis, corpus: str
) -> None:
    tokenizer = client.train_tokenizer(char_tokenizer(corpus, "tok")).run_id  # queued only
    accepted = client.call(
        create_study(
            StudyCreate(
                spec=StudySpec.model_validate(study_spec(tokenizer, corpus)),
                study_id="st-q",
                user_id=5,
            )
        )
    )
    assert (accepted.study_id, accepted.status) == ("st-q", "queued")
    assert accepted.trial_run_ids == ["st-q-t0001", "st-q-t0002"]  # parallelism 2
    assert Queue(TRAINING_QUEUE, connection=redis_client).count == 3  # tokenizer + 2 trials

    listed = client.call(list_studies(StudyQuery(status=RunStatus.QUEUED)))
    assert (listed.total, [s.study_id for s in listed.items]) == (1, ["st-q"])
    assert client.call(list_studies(StudyQuery(status=RunStatus.COMPLETED))).total == 0
    study = client.call(get_study("st-q"))
    assert (study.status, study.user_id, study.n_trials, study.trials_done) == ("queued", 5, 3, 0)
    assert [t.run_id for t in study.trials] == ["st-q-t0001", "st-q-t0002"]
    assert study.best is None and study.report is None

    cancelled = client.call(cancel_study("st-q"))
    assert cancelled.cancelled_trials == ["st-q-t0001", "st-q-t0002"]
    runs = RunStateStore(redis_client)
    assert runs.status("st-q-t0001") is RunStatus.CANCELLED  # queued: cancelled at once
    work(redis_client)  # the tokenizer, then the finalization the last cancel handed out
    study = client.call(get_study("st-q"))
    assert study.status == "cancelled", study.message
    assert study.trials_done == 0 and study.n_failed == 0
    with pytest.raises(ApiError) as finished:
        client.call(cancel_study("st-q"))
    assert (finished.value.status, finished.value.code) == (409, ErrorCode.CONFLICT)


def test_a_study_runs_to_its_report_through_the_api(
    client: TrainerClient, redis_client: redis.Redis, corpus: str, data_root: Path
) -> None:
    client.train_tokenizer(char_tokenizer(corpus, "tok"))
    work(redis_client)
    study_id = _create(client, study_spec("tok", corpus))
    assert study_id.startswith("study-")
    work(redis_client)

    study = client.call(get_study(study_id))
    assert study.status == "completed", study.message
    assert (study.trials_done, study.n_complete) == (3, 3)
    assert study.best is not None and study.best_value == study.best.value
    assert study.report is not None
    best = study.report["best_trial"]
    assert isinstance(best, dict) and best["run_id"] == study.best.run_id
    assert (data_root / "studies" / study_id / "evaluation_report.json").is_file()
    assert study.plots == list(STUDY_PLOTS)  # three completed trials with different rates
    for name in study.plots:
        png = client.read_bytes(study_plot(study_id, name))
        assert png == (data_root / "studies" / study_id / name).read_bytes()
        assert png.startswith(b"\x89PNG")
    listed = client.call(list_studies(StudyQuery(status=RunStatus.COMPLETED)))
    assert [s.study_id for s in listed.items] == [study_id]
    assert listed.items[0].best_value == study.best.value

    assert client.call(evaluate_study(study_id)).study_id == study_id  # evaluated again
    assert Queue(TRAINING_QUEUE, connection=redis_client).count == 1


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        (
            {"search_space": {"train.nope": {"type": "uniform", "low": 0, "high": 1}}},
            422,
            "INVALID_INPUT",
        ),
        (
            {"search_space": {"tokenizer_id": {"type": "categorical", "choices": ["x"]}}},
            422,
            "INVALID_INPUT",
        ),
        # batch_size 2048 is over the spec's bound: the corner is refused before queuing
        (
            {"search_space": {"train.batch_size": {"type": "categorical", "choices": [8, 2048]}}},
            422,
            "INVALID_INPUT",
        ),
        # a float where an int is required
        (
            {"search_space": {"train.batch_size": {"type": "uniform", "low": 2, "high": 8}}},
            422,
            "INVALID_INPUT",
        ),
        ({"direction": "maximize"}, 422, "INVALID_INPUT"),
        ({"n_trials": 0}, 422, "INVALID_INPUT"),
        ({"parallelism": 65}, 422, "INVALID_INPUT"),
        (
            {"search_space": {"train.learning_rate": {"type": "log_uniform", "low": 0, "high": 1}}},
            422,
            "INVALID_INPUT",
        ),
        ({"search_space": {}}, 422, "INVALID_INPUT"),
        ({"timeout_s": float("inf")}, 422, "INVALID_INPUT"),
    ],
)
def test_bad_studies_are_refused_before_anything_is_queued(
    live_api: LiveApi,
    redis_client: redis.Redis,
    corpus: str,
    change: JsonObject,
    status: int,
    code: str,
) -> None:
    spec = copy.deepcopy(study_spec("tok", corpus))
    spec.update(change)
    content = json.dumps({"spec": spec})  # inf goes out as JSON's "Infinity" literal
    response = httpx.post(
        f"{live_api.base_url}/studies",
        content=content,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == status, response.text
    error = response.json()
    assert error["code"] == code and error["message"] and error["request_id"]
    assert Queue(TRAINING_QUEUE, connection=redis_client).count == 0


def test_unknown_tokenizer_and_unknown_study_are_404(client: TrainerClient, corpus: str) -> None:
    with pytest.raises(ApiError) as missing:
        _create(client, study_spec("no-such-tok", corpus))
    assert (missing.value.status, missing.value.code) == (404, ErrorCode.DATA_NOT_FOUND)
    with pytest.raises(ApiError) as unknown:
        client.call(get_study("nope"))
    assert (unknown.value.status, unknown.value.code) == (404, ErrorCode.NOT_FOUND)
    with pytest.raises(ApiError) as bad_id:
        client.call(get_study("../x"))
    assert bad_id.value.status in (404, 422)


def test_a_plot_is_404_until_drawn_and_only_allowed_names_are_served(
    live_api: LiveApi, client: TrainerClient, corpus: str
) -> None:
    client.train_tokenizer(char_tokenizer(corpus, "tok"))  # queued only
    study_id = _create(client, study_spec("tok", corpus), study_id="st-plots")
    assert client.call(get_study(study_id)).plots == []
    with pytest.raises(ApiError) as not_drawn:
        client.read_bytes(study_plot(study_id, "optimization_history.png"))
    assert (not_drawn.value.status, not_drawn.value.code) == (404, ErrorCode.NOT_FOUND)
    assert "drawn when it ends" in not_drawn.value.message
    with pytest.raises(ApiError) as unknown:
        client.read_bytes(study_plot("no-such-study", "param_importances.png"))
    assert (unknown.value.status, unknown.value.code) == (404, ErrorCode.NOT_FOUND)
    for name in ("evaluation_report.json", "optuna.journal", "chart.png"):
        response = httpx.get(f"{live_api.base_url}/studies/{study_id}/plots/{name}")
        assert response.status_code == 422, name  # not an allowed plot name
        error = response.json()
        assert error["code"] == "INVALID_INPUT" and error["request_id"]
