"""The model registry through the API: register a run's saved classifier, list, promote,
roll back; typed errors for unknown names, stages already held and bad versions."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import redis

from platform_core import api_calls
from platform_core.api_models import ModelVersionCreate, PromoteRequest, RollbackRequest
from platform_core.errors import ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import ModelPromoted, ModelRolledBack
from platform_core.http_client import ApiError, TrainerClient
from tests.api.conftest import LiveApi
from tests.classify_models import save_tiny_classifier

pytestmark = pytest.mark.integration


@pytest.fixture
def saved_run(data_root: Path) -> str:
    save_tiny_classifier(data_root, "run-m")
    return "run-m"


def test_register_promote_and_roll_back(client: TrainerClient, saved_run: str) -> None:
    first = client.call(
        api_calls.register_model_version(
            "clf", ModelVersionCreate(source_run=saved_run, actor="ana", reason="first cut")
        )
    )
    assert (first.version, first.stage) == ("1.0.0", "staging")
    assert first.metadata is not None and first.metadata.size_bytes > 0
    second = client.call(
        api_calls.register_model_version(
            "clf", ModelVersionCreate(source_run=saved_run, version="1.2.0")
        )
    )
    assert second.version == "1.2.0"

    client.call(api_calls.promote_model("clf", "1.0.0", PromoteRequest(actor="ana", reason="ok")))
    change = client.call(
        api_calls.promote_model("clf", "1.2.0", PromoteRequest(actor="bo", reason="A/B won"))
    )
    assert (change.version, change.previous_production, change.actor) == ("1.2.0", "1.0.0", "bo")
    listed = client.call(api_calls.LIST_MODELS)
    assert [(m.name, m.production, m.versions) for m in listed.items] == [("clf", "1.2.0", 2)]

    back = client.call(api_calls.rollback_model("clf", RollbackRequest(actor="ana", reason="slow")))
    assert (back.action, back.version) == ("rollback", "1.0.0")
    versions = client.call(api_calls.model_versions("clf"))
    assert versions.production == "1.0.0"
    assert [(v.version, v.stage) for v in versions.items] == [
        ("1.0.0", "production"),
        ("1.2.0", "archived"),
    ]
    assert [h.action for h in versions.history] == [
        "register",
        "register",
        "promote",
        "promote",
        "rollback",
    ]


def test_registry_errors_are_typed(
    client: TrainerClient, live_api: LiveApi, saved_run: str
) -> None:
    with pytest.raises(ApiError) as unknown:
        client.call(api_calls.model_versions("nothing"))
    assert (unknown.value.status, unknown.value.error_code) == (404, ErrorCode.NOT_FOUND)
    with pytest.raises(ApiError) as no_model:
        client.call(
            api_calls.register_model_version("x", ModelVersionCreate(source_run="run-none"))
        )
    assert (no_model.value.status, no_model.value.error_code) == (404, ErrorCode.DATA_NOT_FOUND)

    client.call(api_calls.register_model_version("y", ModelVersionCreate(source_run=saved_run)))
    with pytest.raises(ApiError) as same:
        client.call(api_calls.promote_model("y", "1.0.0", PromoteRequest(stage="staging")))
    assert (same.value.status, same.value.error_code) == (409, ErrorCode.CONFLICT)
    with pytest.raises(ApiError) as nothing_before:
        client.call(api_calls.rollback_model("y", RollbackRequest()))
    assert nothing_before.value.status == 409

    for path, body in (
        ("/models/y/versions/1.0/promote", {}),
        ("/models/y/versions/01.0.0/promote", {}),
        ("/models/y/versions/1.0.0/promote", {"stage": "live"}),
        ("/models/y/versions", {"source_run": "../etc"}),
    ):
        answer = httpx.post(f"{live_api.base_url}{path}", content=json.dumps(body))
        assert answer.status_code == 422, path
        assert answer.json()["code"] == "INVALID_INPUT" and answer.json()["request_id"]


def test_promotions_and_rollbacks_are_published_once_committed(
    client: TrainerClient, redis_client: redis.Redis, saved_run: str
) -> None:
    """Each committed change is one typed event on the bus (who, why, from/to stage); a
    refused change publishes nothing."""
    bus = EventBus(redis_client)
    for version in ("1.0.0", "1.1.0"):
        body = ModelVersionCreate(source_run=saved_run, version=version)
        client.call(api_calls.register_model_version("pub", body))
    start = bus.last_id()
    owner = "123456789012345678"
    client.call(api_calls.promote_model("pub", "1.0.0", PromoteRequest(actor=owner, reason="ok")))
    client.call(api_calls.promote_model("pub", "1.1.0", PromoteRequest(actor="bo", reason="A/B")))
    with pytest.raises(ApiError):  # already in production: refused, so not published
        client.call(api_calls.promote_model("pub", "1.1.0", PromoteRequest()))
    client.call(api_calls.rollback_model("pub", RollbackRequest(actor=owner, reason="slow")))
    with pytest.raises(ApiError):  # no such version: refused, so not published
        client.call(api_calls.promote_model("pub", "9.9.9", PromoteRequest()))

    events = [delivery.event for delivery in bus.read(start)]
    assert [type(event) for event in events] == [ModelPromoted, ModelPromoted, ModelRolledBack]
    first, second, back = events
    assert isinstance(first, ModelPromoted) and isinstance(second, ModelPromoted)
    assert isinstance(back, ModelRolledBack)
    assert (first.run_id, first.user_id, first.payload.actor) == (saved_run, int(owner), owner)
    assert (first.payload.from_stage, first.payload.to_stage) == ("staging", "production")
    assert (second.user_id, second.payload.previous_production) == (None, "1.0.0")
    assert (back.payload.version, back.payload.from_stage) == ("1.0.0", "archived")
    assert (back.payload.previous_production, back.payload.reason) == ("1.1.0", "slow")
