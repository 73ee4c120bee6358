"""The study store and the contracts around it on a real Redis, without the API or a worker:
study ids that are refused, cancelling a study whose trials are in every state, a study the
stale-run sweep must leave alone, study specs that cannot be applied, inference requests sent
twice, and the spec rules no other package's request reaches."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import redis
from pydantic import ValidationError
from rq import Queue

from platform_core.errors import AppError, ErrorCode
from platform_core.inference_results import enqueue_inference
from platform_core.json_types import JsonObject
from platform_core.queue import INFERENCE_QUEUE, TRAINING_QUEUE, requeue_stale_runs
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.specs import ModelSpec, TaskWeights
from platform_core.studies import MAX_STUDY_ID_CHARS, StudyStore
from platform_core.study_specs import StudySpec, apply_params, validate_study

pytestmark = pytest.mark.integration


def _payload(**fields: object) -> JsonObject:
    payload: JsonObject = {
        "name": "edges",
        "base": {
            "model": {"family": "char_lstm", "preset": "tiny"},
            "tokenizer_id": "tok",
            "corpus": {"path": "corpus.txt"},
            "train": {"max_steps": 10, "batch_size": 8, "block_size": 32, "device": "cpu"},
        },
        "search_space": {
            "train.learning_rate": {"type": "log_uniform", "low": 1e-3, "high": 3e-2},
            "train.batch_size": {"type": "categorical", "choices": [4, 8]},
        },
        "n_trials": 4,
        "parallelism": 3,
    }
    payload.update(fields)  # type: ignore[arg-type]  # test payloads are JSON
    return payload


def _refusal(call: Callable[[], object]) -> AppError:
    with pytest.raises(AppError) as refused:
        call()
    return refused.value


@pytest.fixture
def spec() -> StudySpec:
    return validate_study(_payload())


def test_study_ids_that_are_too_long_or_taken_are_refused(
    redis_client: redis.Redis, spec: StudySpec
) -> None:
    studies = StudyStore(redis_client)
    too_long = _refusal(lambda: studies.create("s" * (MAX_STUDY_ID_CHARS + 1), spec, user_id=None))
    assert too_long.code is ErrorCode.INVALID_INPUT
    assert f"at most {MAX_STUDY_ID_CHARS} characters" in too_long.message

    assert studies.create("st-1", spec, user_id=None) == ["st-1-t0001", "st-1-t0002", "st-1-t0003"]
    RunStateStore(redis_client).set_status("a-run", RunStatus.QUEUED)  # runs share the ids
    for taken in ("st-1", "a-run"):
        conflict = _refusal(partial(studies.create, taken, spec, user_id=None))
        assert conflict.code is ErrorCode.CONFLICT
        assert conflict.message == f"{taken} already exists; choose another id"
    assert Queue(TRAINING_QUEUE, connection=redis_client).count == 3  # nothing more queued

    assert _refusal(lambda: studies.spec("st-unknown")).code is ErrorCode.NOT_FOUND


def test_cancelling_counts_ended_and_never_started_trials_and_asks_running_ones_to_stop(
    redis_client: redis.Redis, spec: StudySpec
) -> None:
    studies, runs = StudyStore(redis_client), RunStateStore(redis_client)
    first, second, third = studies.create("st-c", spec, user_id=None)
    runs.set_status(first, RunStatus.RUNNING)
    runs.set_status(first, RunStatus.COMPLETED)  # ended before the cancel
    runs.set_status(second, RunStatus.RUNNING)  # its worker sees the flag and stops
    # the third never started: queued, so the cancellation ends it here

    touched = studies.cancel("st-c")

    assert touched == [second, third]
    assert studies.cancel_requested("st-c")
    assert runs.status(second) is RunStatus.RUNNING  # asked to stop, still running
    assert redis_client.exists(f"runs:{second}:cancelled")
    assert runs.status(third) is RunStatus.CANCELLED
    # counted: the ended first and the never-started third; the running second counts when
    # its worker ends it, and then the study is handed to its finalization
    assert studies.finish_trial("st-c", first) == "none"  # counted once already
    assert studies.finish_trial("st-c", second) == "finalize"
    runs.set_status("st-c", RunStatus.CANCELLED)  # as its finalization ends it
    assert _refusal(lambda: studies.cancel("st-c")).code is ErrorCode.CONFLICT  # it ended


def test_the_stale_run_sweep_leaves_a_study_to_its_trials(
    redis_client: redis.Redis, spec: StudySpec
) -> None:
    """A study has no job and no heartbeat of its own: its trials beat and are requeued,
    never the study."""
    studies, runs = StudyStore(redis_client), RunStateStore(redis_client)
    [trial, *_] = studies.create("st-s", spec, user_id=None)
    runs.set_status("st-s", RunStatus.RUNNING)
    runs.set_status(trial, RunStatus.RUNNING)
    runs.beat(trial, now=100.0)

    assert requeue_stale_runs(redis_client, stale_after_s=60, now=200.0) == [trial]
    assert runs.status("st-s") is RunStatus.RUNNING
    assert runs.meta("st-s").get("kind") == "study"


def test_a_parameter_that_is_not_finite_is_refused(spec: StudySpec) -> None:
    with pytest.raises(AppError) as refused:
        apply_params(spec.base, {"train.learning_rate": float("inf")})
    assert refused.value.code is ErrorCode.INVALID_INPUT
    assert refused.value.message == "'train.learning_rate': inf is not finite"
    applied = apply_params(spec.base, {"train.learning_rate": 0.02, "train.batch_size": 4})
    assert (applied.train.learning_rate, applied.train.batch_size) == (0.02, 4)


def test_an_inference_request_sent_twice_runs_once(redis_client: redis.Redis) -> None:
    request: JsonObject = {"prompt": "The ", "max_new_tokens": 4}
    first = enqueue_inference(redis_client, "generate", "run-1", "req-1", request)
    again = enqueue_inference(redis_client, "generate", "run-1", "req-1", {"prompt": "other"})
    assert again == first and again.request == request  # the first request stands
    assert Queue(INFERENCE_QUEUE, connection=redis_client).count == 1
    for run_id, request_id, name in (
        ("run 1", "req-2", "run id"),
        ("run-1", "r" * 65, "request id"),
    ):
        with pytest.raises(AppError) as refused:
            enqueue_inference(redis_client, "generate", run_id, request_id, request)
        assert refused.value.code is ErrorCode.INVALID_INPUT
        assert refused.value.message.startswith(f"{name} ")
    assert Queue(INFERENCE_QUEUE, connection=redis_client).count == 1


def test_spec_rules_no_request_of_another_package_reaches() -> None:
    with pytest.raises(ValidationError, match="context_size does not apply to char_lstm"):
        ModelSpec.model_validate({"family": "char_lstm", "preset": "tiny", "context_size": 64})
    with pytest.raises(ValidationError, match="at least one task weight must be positive"):
        TaskWeights(criteria_matcher=0.0, evidence_binder=0.0)
    assert TaskWeights(criteria_matcher=0.0, evidence_binder=2.0).evidence_binder == 2.0
