"""Tokenizers through the API: submit, train in a real (in-process) worker, describe, list;
ids, idempotency and corpus paths refused before anything is queued."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import redis
from rq import Queue

from platform_core.errors import ErrorCode
from platform_core.http_client import ApiError, TrainerClient
from platform_core.queue import TRAINING_QUEUE
from platform_core.run_state import RunStateStore, RunStatus
from tests.api.conftest import LiveApi, char_tokenizer, work

pytestmark = pytest.mark.integration


def _queued(client: redis.Redis) -> int:
    return Queue(TRAINING_QUEUE, connection=client).count


@pytest.mark.slow
def test_a_tokenizer_is_queued_trained_and_described(
    client: TrainerClient, redis_client: redis.Redis, corpus: str
) -> None:
    accepted = client.train_tokenizer(char_tokenizer(corpus, "tok-a", user_id=7))
    assert (accepted.run_id, accepted.kind, accepted.status) == (
        "tok-a",
        "train_tokenizer",
        "queued",
    )

    queued = client.get_tokenizer("tok-a")
    assert (queued.status, queued.kind, queued.stats) == ("queued", "char", None)

    work(redis_client)
    trained = client.get_tokenizer("tok-a")
    assert trained.status == "completed"
    assert trained.kind == "char" and trained.vocab_size is not None and trained.vocab_size > 30
    assert trained.stats is not None and 0.9 < trained.stats.coverage <= 1.0
    assert trained.corpus_source == corpus and trained.created_at is not None
    assert trained.message is not None and "char tokenizer" in trained.message

    run = client.get_run("tok-a")  # a tokenizer is a run too
    assert (run.kind, run.status, run.user_id) == ("train_tokenizer", "completed", 7)


@pytest.mark.slow
def test_an_id_is_made_when_none_is_given_and_listing_shows_both_states(
    client: TrainerClient, redis_client: redis.Redis, corpus: str
) -> None:
    first = client.train_tokenizer(char_tokenizer(corpus))
    assert first.run_id.startswith("tok-") and len(first.run_id) == 16
    work(redis_client)
    second = client.train_tokenizer(char_tokenizer(None))

    listed = client.list_tokenizers().items
    assert [(t.tokenizer_id, t.status) for t in listed] == sorted(
        [(first.run_id, "completed"), (second.run_id, "queued")]
    )


def test_a_taken_id_is_a_conflict(client: TrainerClient, corpus: str, data_root: Path) -> None:
    client.train_tokenizer(char_tokenizer(corpus, "dup"))
    with pytest.raises(ApiError) as twice:
        client.train_tokenizer(char_tokenizer(corpus, "dup"))
    assert (twice.value.status, twice.value.error_code) == (409, ErrorCode.CONFLICT)

    (data_root / "runs" / "on-disk").mkdir(parents=True)  # ids are shared with model runs
    with pytest.raises(ApiError) as taken:
        client.train_tokenizer(char_tokenizer(corpus, "on-disk"))
    assert taken.value.status == 409


def test_same_idempotency_key_same_body_queues_once(
    client: TrainerClient, redis_client: redis.Redis, corpus: str
) -> None:
    body = char_tokenizer(corpus)
    first = client.train_tokenizer(body, idempotency_key="key-1")
    again = client.train_tokenizer(body, idempotency_key="key-1")
    assert again == first
    assert _queued(redis_client) == 1

    with pytest.raises(ApiError) as other_body:
        client.train_tokenizer(char_tokenizer(None), idempotency_key="key-1")
    assert (other_body.value.status, other_body.value.error_code) == (409, ErrorCode.CONFLICT)
    assert "different request body" in other_body.value.message
    # a key whose request failed is free again
    with pytest.raises(ApiError):
        client.train_tokenizer(char_tokenizer("missing.txt"), idempotency_key="key-2")
    assert client.train_tokenizer(body, idempotency_key="key-2").status == "queued"
    assert _queued(redis_client) == 2


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("../outside.txt", 422, ErrorCode.PATH_OUTSIDE_DATA_ROOT),
        ("data/../../outside.txt", 422, ErrorCode.PATH_OUTSIDE_DATA_ROOT),
        ("escape-link", 422, ErrorCode.PATH_OUTSIDE_DATA_ROOT),
        ("missing.txt", 404, ErrorCode.DATA_NOT_FOUND),
        # a name longer than the file system's 255 bytes names nothing (ENAMETOOLONG: a 500 once)
        ("0" * 1000, 404, ErrorCode.DATA_NOT_FOUND),
        (f"data/{'x' * 300}/corpus.txt", 404, ErrorCode.DATA_NOT_FOUND),
    ],
)
def test_corpus_paths_are_resolved_inside_the_data_root(
    client: TrainerClient,
    redis_client: redis.Redis,
    data_root: Path,
    tmp_path: Path,
    path: str,
    status: int,
    code: ErrorCode,
) -> None:
    (tmp_path / "outside.txt").write_text("secret")
    os.symlink(tmp_path / "outside.txt", data_root / "escape-link")
    with pytest.raises(ApiError) as refused:
        client.train_tokenizer(char_tokenizer(path))
    assert (refused.value.status, refused.value.error_code) == (status, code)
    assert _queued(redis_client) == 0


def test_an_absolute_path_and_bad_fields_are_invalid_input(live_api: LiveApi) -> None:
    url = f"{live_api.base_url}/tokenizers/train"
    absolute = {"spec": {"kind": "char", "corpus": {"path": "/etc/passwd"}}}
    response = httpx.post(url, json=absolute)
    assert response.status_code == 422
    assert response.json()["code"] == "INVALID_INPUT"
    assert "spec.corpus.path" in response.json()["message"]

    unknown = httpx.post(url, json={"spec": {"kind": "char"}, "colour": "red"})
    assert unknown.status_code == 422 and "colour" in unknown.json()["message"]
    bad_id = httpx.post(url, json={"spec": {"kind": "char"}, "tokenizer_id": "../x"})
    assert bad_id.status_code == 422 and "tokenizer_id" in bad_id.json()["message"]


def test_unknown_and_malformed_tokenizer_ids(client: TrainerClient) -> None:
    with pytest.raises(ApiError) as unknown:
        client.get_tokenizer("nope")
    assert (unknown.value.status, unknown.value.error_code) == (404, ErrorCode.NOT_FOUND)
    with pytest.raises(ApiError) as malformed:
        client.get_tokenizer("bad id!")
    assert malformed.value.status == 422


def test_unreadable_tokenizers_are_left_out(
    client: TrainerClient, redis_client: redis.Redis, data_root: Path
) -> None:
    bad = data_root / "tokenizers" / "bad"
    bad.mkdir(parents=True)
    (bad / "manifest.json").write_text('{"kind": "char"}')  # fields missing
    store = RunStateStore(redis_client)
    store.set_meta("odd", kind="train_tokenizer", user_id=None, spec_json="not a spec")
    store.set_status("odd", RunStatus.QUEUED)

    with pytest.raises(ApiError) as unreadable:
        client.get_tokenizer("bad")
    assert unreadable.value.status == 404
    odd = client.get_tokenizer("odd")
    assert (odd.status, odd.kind) == ("queued", None)
    assert [t.tokenizer_id for t in client.list_tokenizers().items] == ["odd"]


def test_folders_whose_names_are_no_ids_are_left_out_of_the_listing(
    client: TrainerClient, data_root: Path
) -> None:
    """A folder name that is not UTF-8 made GET /tokenizers answer 500."""
    folder = os.fsencode(data_root / "tokenizers")
    os.mkdir(folder)
    for name in (b"bad-\xff", b"with space"):
        os.mkdir(folder + b"/" + name)
        Path(os.fsdecode(folder + b"/" + name + b"/manifest.json")).write_text("{}")
    assert client.list_tokenizers().items == []
