"""`trainctl retrain`, `trainctl retrain-policy` and `trainctl models compare` against the
live API: what they print, what they queue, and the exit codes of their mistakes."""

from __future__ import annotations

import json

import pytest
import redis

from platform_core.errors import ExitCode
from platform_core.model_registry import ModelRegistry
from platform_core.retraining import get_policy, lock_key
from platform_core.run_state import RunStateStore, RunStatus
from tests.api.test_retraining import registry
from tests.cli.test_remote import Cli, cli

__all__ = ["cli", "registry"]
pytestmark = pytest.mark.integration
OWNER = "123456789012345678"


def test_the_retrain_policy_is_shown_and_changed_a_flag_at_a_time(
    cli: Cli, redis_client: redis.Redis, registry: ModelRegistry
) -> None:
    none_yet = cli("retrain-policy", "clf")
    assert none_yet.code != 0 and "NOT_FOUND" in none_yet.err
    set_ = cli("retrain-policy", "clf", "--cron", "0 3 * * 1", "--owner", OWNER)
    assert set_.code == 0, set_.err
    assert set_.out.strip() == (
        f"clf: schedule 0 3 * * 1, data growth +10% rows, promote at +0.020 accuracy with "
        f"McNemar p < 0.05, owner {OWNER}"
    )
    changed = cli("retrain-policy", "clf", "--no-growth", "--min-gain", "0.05", "--json")
    stored = json.loads(changed.out)["policy"]
    assert stored["cron"] == "0 3 * * 1" and stored["growth_threshold"] is None  # kept, changed
    assert stored["min_accuracy_gain"] == 0.05 and stored["owner_id"] == int(OWNER)
    cli("retrain-policy", "clf", "--cron", "", "--growth", "0.25", "--alpha", "0.01")
    shown = cli("retrain-policy", "clf")
    assert "schedule none, data growth +25% rows" in shown.out and "p < 0.01" in shown.out

    bad = cli("retrain-policy", "clf", "--cron", "every day")
    assert bad.code == ExitCode.CONFIG and "INVALID_INPUT" in bad.err
    assert "cron" in bad.err
    policy = get_policy(redis_client, "clf")
    assert policy is not None and policy.policy.cron is None  # the refused change left it
    bad_name = cli("retrain-policy", "bad!", "--cron", "0 3 * * 1")
    assert bad_name.code == ExitCode.CONFIG and "INVALID_INPUT" in bad_name.err
    unregistered = cli("retrain-policy", "nothing", "--cron", "0 3 * * 1")
    assert unregistered.code != 0 and "NOT_FOUND" in unregistered.err


def test_retrain_queues_the_chain_and_refuses_a_second(
    cli: Cli, redis_client: redis.Redis, registry: ModelRegistry
) -> None:
    as_json = cli("retrain", "clf", "--json", "--dataset", "ds-api")
    assert json.loads(as_json.out)["dataset_run"] is None
    redis_client.delete(lock_key("clf"))  # as if that retraining had ended
    done = cli("retrain", "clf", "--user-id", OWNER)
    assert done.code == 0, done.err
    first, follow = done.out.splitlines()
    assert first.startswith("retraining clf (production 1.0.0): retrain-")
    run_id = follow.rsplit(" ", 1)[1]
    assert first.endswith(f"{run_id}-data -> {run_id}-train -> {run_id}")
    assert RunStateStore(redis_client).status(run_id) is RunStatus.QUEUED
    again = cli("retrain", "clf", "--json")
    assert again.code == ExitCode.CONFIG and "CONFLICT" in again.err
    bad = cli("retrain", "clf", "--dataset", "../up")
    assert bad.code == ExitCode.CONFIG and "INVALID_INPUT" in bad.err


def test_models_compare_queues_a_comparison(
    cli: Cli, redis_client: redis.Redis, registry: ModelRegistry
) -> None:
    done = cli("models", "compare", "clf", "1.1.0", "--min-gain", "0.05")
    assert done.code == 0, done.err
    queued, report = done.out.splitlines()
    run_id = queued.split()[1].rstrip(":")
    assert queued == f"compare_models {run_id}: queued"
    assert report == f"its report: GET /models/clf/comparisons/{run_id}"
    spec = json.loads(RunStateStore(redis_client).spec_json(run_id) or "{}")
    assert (spec["current"], spec["candidate"], spec["min_accuracy_gain"]) == (
        "1.0.0",
        "1.1.0",
        0.05,
    )
    as_json = cli("models", "compare", "clf", "1.1.0", "--current", "1.0.0", "--json")
    assert json.loads(as_json.out)["kind"] == "compare_models"
    missing = cli("models", "compare", "clf", "7.0.0")
    assert missing.code != 0 and "NOT_FOUND" in missing.err
