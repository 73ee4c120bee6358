"""The model registry on a real Redis: a tiny sequence classifier saved by a run is
registered with its metadata and loads back with `from_pretrained` from the registry's
folder; promotion, rollback and their history; racing promotions leave one production."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

import pytest
import redis
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
)

from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.layout import DataLayout
from platform_core.model_registry import METADATA_FILE, ModelRegistry, RegistryChange
from platform_core.redis_connection import connect
from tests.classify_models import save_tiny_classifier

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(redis_client: redis.Redis, data_root: Path) -> ModelRegistry:
    return ModelRegistry(redis_client, DataLayout(data_root))


def test_a_registered_version_loads_with_from_pretrained_and_has_its_metadata(
    registry: ModelRegistry, data_root: Path
) -> None:
    layout = DataLayout(data_root)
    original = save_tiny_classifier(data_root, "run-cls", seed=1, labels=("ec2", "s3", "iam"))
    metadata = registry.register(
        "svc-clf", None, source_run="run-cls", dataset_id=None, actor="ana", reason="first"
    )
    assert (metadata.name, metadata.version, metadata.source_run) == ("svc-clf", "1.0.0", "run-cls")
    folder = layout.model_version_dir("svc-clf", "1.0.0")
    assert set(metadata.files) == {"config.json", "model.safetensors"}
    assert metadata.size_bytes == sum((folder / name).stat().st_size for name in metadata.files)
    assert json.loads((folder / METADATA_FILE).read_text())["version"] == "1.0.0"

    loaded = AutoModelForSequenceClassification.from_pretrained(folder)
    assert isinstance(loaded, BertForSequenceClassification)
    loaded.train(False)
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, original(ids).logits)
    assert loaded.config.id2label == {0: "ec2", 1: "s3", 2: "iam"}
    assert [(v.version, v.stage) for v in registry.versions("svc-clf")] == [("1.0.0", "staging")]

    again = registry.register(
        "svc-clf", None, source_run="run-cls", dataset_id=None, actor="ana", reason="second"
    )
    assert again.version == "1.1.0"  # the next minor version
    with pytest.raises(AppError) as taken:
        registry.register(
            "svc-clf", "1.1.0", source_run="run-cls", dataset_id=None, actor="a", reason=""
        )
    assert taken.value.code is ErrorCode.CONFLICT
    with pytest.raises(AppError) as no_model:
        registry.register(
            "svc-clf", "2.0.0", source_run="run-none", dataset_id=None, actor="a", reason=""
        )
    assert no_model.value.code is ErrorCode.DATA_NOT_FOUND


def test_promote_archive_and_rollback_with_history_in_redis_and_on_disk(
    registry: ModelRegistry, data_root: Path
) -> None:
    layout = DataLayout(data_root)
    save_tiny_classifier(data_root, "run-a", seed=1)
    for version in ("1.0.0", "1.1.0"):
        registry.register("m", version, source_run="run-a", dataset_id=None, actor="ci", reason="")
    registry.promote("m", "1.0.0", "production", actor="ana", reason="beats baseline")
    change = registry.promote("m", "1.1.0", "production", actor="bo", reason="A/B: +3 points")
    assert (change.from_stage, change.to_stage, change.previous_production) == (
        "staging",
        "production",
        "1.0.0",
    )
    stages = {v.version: v.stage for v in registry.versions("m")}
    assert stages == {"1.0.0": "archived", "1.1.0": "production"}

    back = registry.rollback("m", actor="ana", reason="latency regression")
    assert (back.action, back.version, back.previous_production) == ("rollback", "1.0.0", "1.1.0")
    assert registry.production("m") == "1.0.0"
    assert {v.version: v.stage for v in registry.versions("m")} == {
        "1.0.0": "production",
        "1.1.0": "archived",
    }
    history = registry.history("m")
    assert [(h.action, h.version, h.actor) for h in history] == [
        ("register", "1.0.0", "ci"),
        ("register", "1.1.0", "ci"),
        ("promote", "1.0.0", "ana"),
        ("promote", "1.1.0", "bo"),
        ("rollback", "1.0.0", "ana"),
    ]
    on_disk = layout.model_history("m").read_text().splitlines()
    assert [RegistryChange.model_validate_json(line) for line in on_disk] == history

    with pytest.raises(AppError) as same:
        registry.promote("m", "1.0.0", "production", actor="a", reason="")
    assert same.value.code is ErrorCode.CONFLICT
    with pytest.raises(AppError) as missing:
        registry.promote("m", "9.9.9", "production", actor="a", reason="")
    assert missing.value.code is ErrorCode.NOT_FOUND
    registry.promote("m", "1.0.0", "archived", actor="a", reason="retire")
    assert registry.production("m") is None
    with pytest.raises(AppError, match="no production version"):
        registry.rollback("m", actor="a", reason="")


def test_racing_promotions_leave_exactly_one_production(
    registry: ModelRegistry, redis_url: str, data_root: Path
) -> None:
    save_tiny_classifier(data_root, "run-r", seed=2)
    versions = [f"1.{minor}.0" for minor in range(6)]
    for version in versions:
        registry.register(
            "race", version, source_run="run-r", dataset_id=None, actor="ci", reason=""
        )

    def promote(version: str, start: threading.Barrier, errors: list[AppError]) -> None:
        client = connect(redis_url)
        racer = ModelRegistry(client, DataLayout(data_root))
        start.wait()
        try:
            racer.promote("race", version, "production", actor=version, reason="race")
        except AppError as error:  # already production from an earlier round
            errors.append(error)
        finally:
            client.close()

    for _ in range(10):
        start = threading.Barrier(len(versions))
        errors: list[AppError] = []
        threads = [threading.Thread(target=promote, args=(v, start, errors)) for v in versions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stages = {v.version: v.stage for v in registry.versions("race")}
        production = [v for v, stage in stages.items() if stage == "production"]
        assert len(production) == 1
        assert registry.production("race") == production[0]
        assert all(error.code is ErrorCode.CONFLICT for error in errors)
    promotions = [h for h in registry.history("race") if h.action == "promote"]
    # each promotion replaced the one before it: the chain never forks
    for earlier, later in itertools.pairwise(promotions):
        assert later.previous_production == earlier.version


def test_racing_registrations_of_one_version_register_it_once(
    registry: ModelRegistry, redis_url: str, data_root: Path
) -> None:
    save_tiny_classifier(data_root, "run-twice")
    outcomes: list[str] = []
    start = threading.Barrier(4)

    def register() -> None:
        client = connect(redis_url)
        start.wait()
        try:
            ModelRegistry(client, DataLayout(data_root)).register(
                "dup", "2.0.0", source_run="run-twice", dataset_id=None, actor="ci", reason=""
            )
            outcomes.append("registered")
        except AppError as error:
            outcomes.append(error.code.value)
        finally:
            client.close()

    threads = [threading.Thread(target=register) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["CONFLICT"] * 3 + ["registered"]
    assert [(v.version, v.stage) for v in registry.versions("dup")] == [("2.0.0", "staging")]
    folder = DataLayout(data_root).registered_model_dir("dup")
    assert sorted(path.name for path in folder.iterdir()) == ["2.0.0", "history.jsonl"]


def test_a_bus_that_refuses_leaves_the_committed_change_standing(
    redis_client: redis.Redis, data_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The event is published after the change committed: a bus that is down is logged, and
    the caller gets the change (a retry would be refused as a conflict)."""
    save_tiny_classifier(data_root, "run-bus")
    dead = redis.Redis(host="127.0.0.1", port=9, socket_connect_timeout=0.5)
    registry = ModelRegistry(redis_client, DataLayout(data_root), bus=EventBus(dead))
    registry.register("bus-clf", None, source_run="run-bus", dataset_id=None, actor="a", reason="")
    change = registry.promote("bus-clf", "1.0.0", "production", actor="ana", reason="go")
    assert (change.to_stage, registry.production("bus-clf")) == ("production", "1.0.0")
    [unpublished] = [
        r for r in caplog.records if getattr(r, "event", None) == "registry.event_unpublished"
    ]
    assert getattr(unpublished, "run_id", None) == "run-bus"
    dead.close()
